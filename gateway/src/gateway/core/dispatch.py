"""The gateway's top-level ASGI app: a prefix lookup decides who serves a request.

Proxied prefixes (``/auth``, ``/inference``, …) go straight to the raw proxy; everything
else (``/health``, ``/ready``, ``/metrics``, ``/docs``, ``/openapi.json``) goes to the
gateway's own FastAPI app. The lifespan goes to FastAPI, which starts the shared session.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway.core.route_table import RouteTable
from gateway.services.http_proxy import HttpProxy
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common.problems import problem_bytes

logger = logging.getLogger("switchboard.gateway")


class GatewayApp:
    def __init__(
        self, api: FastAPI, table: RouteTable, http_proxy: HttpProxy, ws_proxy: WebSocketProxy
    ) -> None:
        self.api = api
        self.table = table
        self.http_proxy = http_proxy
        self.ws_proxy = ws_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            service = self.table.resolve(scope["path"])
            if service is not None:
                await self._proxy_http(scope, receive, send, service)
                return
        elif kind == "websocket":
            service = self.table.resolve(scope["path"])
            if service is not None:
                await self.ws_proxy(scope, receive, send, service)
                return
        await self.api(scope, receive, send)

    async def _proxy_http(self, scope: Scope, receive: Receive, send: Send, service: str) -> None:
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.http_proxy(scope, receive, tracked_send, service)
        except Exception:
            logger.exception("proxy error for %s %s", scope["method"], scope["path"])
            if started:
                raise
            body = problem_bytes(
                500,
                detail="The gateway hit an unexpected error. Quote the request_id when reporting.",
                instance=scope["path"],
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

    @property
    def state(self) -> object:
        """The FastAPI app's state (settings, upstreams), for tests and tools."""
        return self.api.state
