"""A request body read whole from ASGI ``receive``, and a ``receive`` that replays it.

For code that must see the body before handing the request on (the gateway's token
estimate and completion cache, the inference service's streaming path deciding whether to
take a request): the body is read once, and whoever comes next reads it again from memory
and then the client's own messages, so a later disconnect is still noticed.
"""

from __future__ import annotations

from starlette.types import Message, Receive


class ClientDisconnected(Exception):
    """The client went away before its request was complete or answered."""


async def read_body(receive: Receive) -> bytes:
    """The whole body; :class:`ClientDisconnected` when the client leaves before its last
    chunk (a truncated body is never taken for a complete one)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """``receive`` that first hands out the already-read body, then defers to the client."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
