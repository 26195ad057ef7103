"""Reading the client's request body for the proxy: whole, or as a bounded stream.

A body that ends with the client gone (``http.disconnect`` before the last chunk) raises
:class:`~switchboard_common.asgi_body.ClientDisconnected`: a truncated body is never forwarded
as a complete one.
A client that goes silent mid-body for longer than allowed (slowloris) makes
:class:`BodyDeadline` raise :class:`ClientBodyTimeout`; the dispatcher answers 408.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message, Receive, Scope

from switchboard_common.asgi_body import ClientDisconnected, read_body, replay_body

BUFFER_LIMIT = 1024 * 1024  # bodies up to this size with a known length are read whole


class BodyTooLarge(Exception):
    pass


class ClientBodyTimeout(Exception):
    """The client sent nothing for too long while its request body was incomplete."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no request body bytes for {timeout_s} s")
        self.timeout_s = timeout_s


class BodyDeadline:
    """``receive`` with a bound on the silence before each body chunk, until the body is
    complete; after that (waiting for a disconnect during a long stream) it never times out.

    Without it a client that declares a body and trickles it (or stops) would hold a
    connection, an upstream connection and a task for as long as it likes.
    """

    __slots__ = ("complete", "receive", "timeout_s")

    def __init__(self, receive: Receive, timeout_s: float) -> None:
        self.receive = receive
        self.timeout_s = timeout_s
        self.complete = False

    async def __call__(self) -> Message:
        if self.complete:
            return await self.receive()
        try:
            async with asyncio.timeout(self.timeout_s):
                message = await self.receive()
        except TimeoutError:
            raise ClientBodyTimeout(self.timeout_s) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message


class RequestBodyStream:
    """The client's body as an async iterator, cut off past ``limit`` bytes."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                raise ClientDisconnected  # a truncated body is never sent as a complete one
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                raise BodyTooLarge
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.finished = True
                return


# --- bodies read before the proxy (completion cache, token estimate) ----------------------


async def buffer_body(scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole request body when it is small enough to hold (a Content-Length up to the
    proxy's buffer limit), and the ``receive`` that replays it; ``(None, receive)`` for a
    chunked or larger body, which stays streamed. Read once, shared by the completion cache
    and the token estimate."""
    length = content_length(scope)
    if length is None or not 0 <= length <= BUFFER_LIMIT:
        return None, receive
    if not length:
        return b"", receive
    try:
        body = await read_body(receive)
    except ClientDisconnected:
        return None, disconnected
    return body, replay_body(body, receive)


def content_length(scope: Scope) -> int | None:
    """The body's declared length; None when it is chunked, absent or malformed (the proxy
    answers a malformed one itself)."""
    length: int | None = None
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length


async def disconnected() -> Message:
    return {"type": "http.disconnect"}
