"""The bench upstream: a bare FastAPI ``/ping`` (the reference point in the issues).

Served under every public prefix (``/auth/ping``, ``/memory/ping``, …) so the gateway can
route to it as any service. ``POST /{prefix}/chat`` answers with the token reservation the
gateway forwarded (U1 settles usage against a reservation a gateway really made).
"""

from fastapi import FastAPI, Request

from switchboard_common.internal_calls import TOKEN_RESERVATION_HEADER

app = FastAPI()


@app.get("/{prefix}/ping")
async def ping(prefix: str) -> dict[str, str]:
    return {"pong": prefix}


@app.post("/{prefix}/chat")
async def chat(prefix: str, request: Request) -> dict[str, str | None]:
    return {"reservation": request.headers.get(TOKEN_RESERVATION_HEADER)}
