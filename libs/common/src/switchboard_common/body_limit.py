"""Reject request bodies over a size limit with a 413 problem.

A declared ``Content-Length`` over the limit is refused before the app runs; a chunked body
is counted as it streams and refused as soon as it crosses the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchboard_common.problems import problem_messages


def too_large_message(
    limit: int, path: str, request_id: str | None = None
) -> tuple[Message, Message]:
    """The 413 problem as two ASGI messages (with ``X-Request-ID`` when one is given)."""
    return problem_messages(
        413,
        f"Request body exceeds the limit of {limit} bytes. Send less, or split it.",
        instance=path,
        request_id=request_id,
        headers=[(b"connection", b"close")],
        extensions={"limit_bytes": limit},
    )


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = declared_length(scope)
        if length is not None and length > self.max_bytes:
            for message in too_large_message(self.max_bytes, scope["path"]):
                await send(message)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return

        received = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            # Raising here would be caught by the framework's body parsing (FastAPI turns it
            # into a 400), so answer 413 from here and tell the app the client went away.
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if not started and not refused:
                        refused = True
                        for reply in too_large_message(self.max_bytes, scope["path"]):
                            await send(reply)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to a body it never fully got: already answered 413
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
