"""Problem answers sent from raw ASGI code (the proxy paths do not run through FastAPI)."""

from __future__ import annotations

from starlette.types import Message, Scope, Send

from switchboard_common.problems import problem_bytes

CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011


def problem_messages(
    status: int,
    detail: str,
    *,
    instance: str,
    request_id: str | None,
    trace_id: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    extensions: dict[str, object] | None = None,
    prefix: str = "http",
) -> tuple[Message, Message]:
    body = problem_bytes(
        status,
        detail=detail,
        instance=instance,
        request_id=request_id,
        trace_id=trace_id,
        extensions=extensions,
    )
    response_headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or ()),
    ]
    if request_id:
        response_headers.append((b"x-request-id", request_id.encode()))
    start: Message = {
        "type": f"{prefix}.response.start",
        "status": status,
        "headers": response_headers,
    }
    return start, {"type": f"{prefix}.response.body", "body": body}


async def send_problem(send: Send, status: int, detail: str, **kwargs: object) -> int:
    start, body = problem_messages(status, detail, **kwargs)  # type: ignore[arg-type]
    await send(start)
    await send(body)
    return status


async def deny_websocket(
    scope: Scope, send: Send, status: int, detail: str, **kwargs: object
) -> None:
    """Refuse a WebSocket handshake: an HTTP problem where the server supports it, else a
    close code (1008 for auth failures, 1011 for upstream failures)."""
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
    code = CLOSE_POLICY_VIOLATION if status in (401, 403, 404) else CLOSE_INTERNAL_ERROR
    await send({"type": "websocket.close", "code": code, "reason": detail[:120]})
