"""Refusals: a :class:`~gateway.core.security.Decision` that says no, answered as a
problem+json response (HTTP) or a denied handshake (WebSocket)."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from gateway.core.responses import deny_websocket, send_problem
from gateway.core.security import Decision
from gateway.services.request_body import ClientBodyTimeout
from switchboard_common.request_context import request_id_from_headers

CHECK_FAILED = Decision(
    status=500,
    detail="The gateway could not check this request. Quote the request_id when reporting.",
)


def body_timeout(exc: ClientBodyTimeout) -> Decision:
    return Decision(
        status=408,
        detail=f"No request body bytes arrived for {exc.timeout_s:g} s; send the body "
        "without long pauses.",
        response_headers=[(b"connection", b"close")],  # the rest of the body is unreadable
    )


async def refuse(scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
    request_id = request_id_from_headers(scope["headers"])
    if scope["type"] == "http":
        await refuse_http(scope, send, decision, request_id)
    else:
        await refuse_websocket(scope, receive, send, decision, request_id)


async def refuse_http(scope: Scope, send: Send, decision: Decision, request_id: str) -> None:
    await send_problem(
        send,
        decision.status,
        decision.detail,
        instance=scope["path"],
        request_id=request_id,
        headers=decision.response_headers,
        extensions=decision.extensions,
    )


async def refuse_websocket(
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
