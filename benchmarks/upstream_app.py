"""The bench upstream: a bare FastAPI ``/ping`` (the reference point in the issues).

Served under every public prefix (``/auth/ping``, ``/memory/ping``, …) so the gateway can
route to it as any service.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/{prefix}/ping")
async def ping(prefix: str) -> dict[str, str]:
    return {"pong": prefix}
