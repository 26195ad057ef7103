"""The gateway's top-level ASGI app: a prefix lookup decides who serves a request.

Proxied prefixes (``/auth``, ``/inference``, …) are authorized (``core/security.py``) and
go straight to the raw proxy; everything else (``/health``, ``/ready``, ``/metrics``,
``/docs``, ``/openapi.json``) goes to the gateway's own FastAPI app. The lifespan goes to
FastAPI, which starts the upstream clients and the authenticator.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway.core.responses import deny_websocket, send_problem
from gateway.core.route_table import RouteTable
from gateway.core.security import Authenticator, Decision
from gateway.services.http_proxy import HttpProxy
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway")


class GatewayApp:
    def __init__(
        self,
        api: FastAPI,
        table: RouteTable,
        auth: Authenticator,
        http_proxy: HttpProxy,
        ws_proxy: WebSocketProxy,
    ) -> None:
        self.api = api
        self.table = table
        self.auth = auth
        self.http_proxy = http_proxy
        self.ws_proxy = ws_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            service = self.table.resolve(scope["path"])
            if service is not None:
                request_id = request_id_from_headers(scope["headers"])
                scope["switchboard.request_id"] = request_id
                decision = await self.auth.authorize(scope, service)
                if kind == "http":
                    if decision.status:
                        await _refuse_http(scope, send, decision, request_id)
                    else:
                        await self._proxy_http(scope, receive, send, service, decision)
                elif decision.status:
                    await _refuse_websocket(scope, receive, send, decision, request_id)
                else:
                    await self.ws_proxy(scope, receive, send, service, decision.identity)
                return
        await self.api(scope, receive, send)

    async def _proxy_http(
        self, scope: Scope, receive: Receive, send: Send, service: str, decision: Decision
    ) -> None:
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        identity = decision.identity if decision.principal is not None else None
        try:
            await self.http_proxy(scope, receive, tracked_send, service, identity)
        except Exception:
            logger.exception("proxy error for %s %s", scope["method"], scope["path"])
            if started:
                raise
            await send_problem(
                send,
                500,
                "The gateway hit an unexpected error. Quote the request_id when reporting.",
                instance=scope["path"],
                request_id=scope.get("switchboard.request_id"),
            )

    @property
    def state(self) -> object:
        """The FastAPI app's state (settings, upstreams), for tests and tools."""
        return self.api.state


async def _refuse_http(scope: Scope, send: Send, decision: Decision, request_id: str) -> None:
    await send_problem(
        send,
        decision.status,
        decision.detail,
        instance=scope["path"],
        request_id=request_id,
        headers=decision.response_headers,
        extensions=decision.extensions,
    )


async def _refuse_websocket(
    scope: Scope, receive: Receive, send: Send, decision: Decision, request_id: str
) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await deny_websocket(
        scope,
        send,
        decision.status,
        decision.detail,
        instance=scope["path"],
        request_id=request_id,
        headers=decision.response_headers,
    )
