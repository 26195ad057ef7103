"""Problem answers sent from raw ASGI code (the proxy paths do not run through FastAPI)."""

from __future__ import annotations

from starlette.types import Scope, Send

from switchboard_common.problems import problem_messages

CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011


async def send_problem(send: Send, status: int, detail: str, **kwargs: object) -> int:
    start, body = problem_messages(status, detail, **kwargs)  # type: ignore[arg-type]
    await send(start)
    await send(body)
    return status


async def send_unexpected_error(scope: Scope, send: Send) -> int:
    """The last-resort 500 of a proxied request (a bug, not an upstream's answer), with the
    request id and, when the proxy had opened its span, the trace to look the error up by."""
    return await send_problem(
        send,
        500,
        "The gateway hit an unexpected error. Quote the request_id when reporting.",
        instance=scope["path"],
        request_id=scope.get("switchboard.request_id"),
        trace_id=scope.get("switchboard.trace_id"),  # services/http_proxy.py sets it
    )


async def deny_websocket(
    scope: Scope, send: Send, status: int, detail: str, **kwargs: object
) -> None:
    """Refuse a WebSocket handshake: an HTTP problem where the server supports it, else a
    close code (1008 for the caller's fault — auth, limits — and 1011 for upstream failures)."""
    if "websocket.http.response" in scope.get("extensions", {}):
        start, body = problem_messages(
            status,
            detail,
            prefix="websocket.http",
            **kwargs,  # type: ignore[arg-type]
        )
        await send(start)
        await send(body)
        return
    code = CLOSE_POLICY_VIOLATION if status < 500 else CLOSE_INTERNAL_ERROR
    await send({"type": "websocket.close", "code": code, "reason": detail[:120]})
