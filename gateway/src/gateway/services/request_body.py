"""Reading the client's request body for the proxy: whole, or as a bounded stream.

A body that ends with the client gone (``http.disconnect`` before the last chunk) raises
:class:`ClientDisconnected`: a truncated body is never forwarded as a complete one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.types import Receive


class BodyTooLarge(Exception):
    pass


class ClientDisconnected(Exception):
    """The client went away before its request was complete or answered."""


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


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected  # a truncated body is never sent as a complete one
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
