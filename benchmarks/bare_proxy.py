"""The floor of one HTTP hop in Python, for S1: what a proxy costs that does nothing else.

Served like the services (uvicorn, uvloop, httptools with the same write coalescing), it
reads the request body, forwards the request over ``switchboard_common.lean_http`` (the
gateway's own upstream client) and relays the answer chunk by chunk. No authentication,
limits, caches, spans, metrics or middleware: set beside the gateway in front of the same
inference service, it shows how much of S1's added time is the gateway's features rather
than the hop itself.

    BARE_PROXY_UPSTREAM=127.0.0.1:8002 python -m benchmarks.bare_proxy --port 8100
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from starlette.types import Receive, Scope, Send

from switchboard_common.asgi_body import read_body
from switchboard_common.lean_http import UpstreamClient
from switchboard_common.server import http_protocol

_NOT_FORWARDED = {b"host", b"content-length", b"connection", b"transfer-encoding"}
_NOT_RELAYED = {b"transfer-encoding", b"connection", b"content-length", b"date", b"server"}
TIMEOUT_S = 30.0


class BareProxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.client = UpstreamClient(host, int(port), connect_timeout_s=5, keepalive_s=60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # uvicorn runs without a lifespan here
        body = await read_body(receive)
        headers = [(k, v) for k, v in scope["headers"] if k not in _NOT_FORWARDED]
        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        conn = self.client.idle_connection() or await self.client.connect()
        framing = b"content-length: %d\r\n" % len(body)
        response = conn.start(self.client.head(scope["method"], target, headers, framing), body)
        await response.read_headers(TIMEOUT_S)
        relayed = [(k, v) for k, v in response.headers if k not in _NOT_RELAYED]
        await send({"type": "http.response.start", "status": response.status, "headers": relayed})
        async for chunk in response.iter_body(TIMEOUT_S):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        self.client.release(conn, response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = BareProxy(os.environ["BARE_PROXY_UPSTREAM"])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=http_protocol(),
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
