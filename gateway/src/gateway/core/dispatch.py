"""The gateway's top-level ASGI app: a prefix lookup decides who serves a request.

Proxied prefixes (``/auth``, ``/inference``, …) are authorized (``core/security.py``) and
go straight to the raw proxy; everything else (``/health``, ``/ready``, ``/metrics``,
``/docs``, ``/openapi.json``) goes to the gateway's own FastAPI app. The lifespan goes to
FastAPI, which starts the upstream clients and the authenticator.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway.core.limits import LimitPolicy
from gateway.core.responses import deny_websocket, send_problem
from gateway.core.route_table import RouteTable
from gateway.core.security import Authenticator, Decision
from gateway.services.http_proxy import HttpProxy
from gateway.services.rate_limit import RateLimiter
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway")


class GatewayApp:
    def __init__(
        self,
        api: FastAPI,
        table: RouteTable,
        auth: Authenticator,
        limits: LimitPolicy,
        limiter: RateLimiter,
        http_proxy: HttpProxy,
        ws_proxy: WebSocketProxy,
    ) -> None:
        self.api = api
        self.table = table
        self.auth = auth
        self.limits = limits
        self.limiter = limiter
        self.http_proxy = http_proxy
        self.ws_proxy = ws_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            service = self.table.resolve(scope["path"])
            if service is not None:
                request_id = request_id_from_headers(scope["headers"])
                scope["switchboard.request_id"] = request_id
                try:
                    decision = await self.auth.authorize(scope, service)
                    if not decision.status:
                        decision = await self._rate_limit(scope, service, decision)
                except Exception:
                    logger.exception("authorization failed for %s", scope["path"])
                    decision = Decision(
                        status=500,
                        detail="The gateway could not check this request. Quote the "
                        "request_id when reporting.",
                    )
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

    async def _rate_limit(self, scope: Scope, service: str, decision: Decision) -> Decision:
        """The decision, refused with 429 when the caller is over its limit; on success the
        RateLimit-* headers ride along to the response."""
        rule = self.limits.for_request(scope, service, decision.principal)
        if rule is None:
            return decision
        outcome = await self.limiter.hit(*rule)
        if outcome.allowed:
            return replace(decision, response_headers=outcome.headers())
        return Decision(
            status=429,
            detail=f"Rate limit of {outcome.limit} requests reached for {service}; "
            f"retry in {max(1, round(outcome.reset_s))} s.",
            response_headers=outcome.headers(),
            extensions={"limit": outcome.limit},
        )

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
            await self.http_proxy(
                scope, receive, tracked_send, service, identity, decision.response_headers
            )
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
