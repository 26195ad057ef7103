"""uvicorn's httptools protocol, writing a response's head and body in one syscall.

uvicorn writes the status line and headers as soon as the app sends
``http.response.start``, then the body in a second write. On loopback TCP each write
costs tens of microseconds here (the peer must be woken), so for a response whose length
is known the head is held back and written together with the first body message.

A streamed (chunked) response's head is held only until the event loop's next turn: when
the app sends its first chunk right after the head (an SSE stream whose first event is
ready, a proxied stream whose first chunk came with the upstream's head) both go out in
one write, which on the time-to-first-token path saves a write and a wake-up of the peer
per hop; when the first chunk is not ready, the head is written on its own at once, so a
client waiting on a slow stream still sees the headers immediately.

This reaches into uvicorn's ``RequestResponseCycle`` (its ``transport`` attribute and the
module-level class it instantiates). ``coalescing_protocol()`` checks that those internals
look as expected and returns uvicorn's own protocol otherwise, so an upgrade can only cost
the optimisation, never correctness. ``tests/test_http_protocol.py`` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http import httptools_impl

logger = logging.getLogger("switchboard.server")


class _HeldWrites:
    """Stands in for the transport while uvicorn writes; collects instead of sending."""

    __slots__ = ("_transport", "close_requested", "parts")

    def __init__(self, transport: Any, first: bytes | None = None) -> None:
        self._transport = transport
        self.parts: list[bytes] = [first] if first else []
        self.close_requested = False

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        self.close_requested = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingCycle(httptools_impl.RequestResponseCycle):
    _held: bytes | None = None
    _flush: asyncio.Handle | None = None  # writes a streamed response's held head

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.response_started and not self.disconnected:
            transport = self.transport
            held = _HeldWrites(transport)
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            data = b"".join(held.parts)
            if not self.keep_alive:
                transport.write(data)  # a closing reply: head goes out now
                return
            self._held = data
            if self.chunked_encoding:  # a stream: out with its first chunk or next turn
                self._flush = asyncio.get_running_loop().call_soon(self._write_held)
            return
        if self._held is not None and kind == "http.response.body":
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            transport = self.transport
            held = _HeldWrites(transport, self._held)
            self._held = None
            self.transport = held  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            if not self.disconnected:
                transport.write(b"".join(held.parts))
            if held.close_requested:
                transport.close()
            return
        await super().send(message)

    def _write_held(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        held, self._held = self._held, None
        if held is not None and not self.disconnected:
            self.transport.write(held)

    async def run_asgi(self, app: Any) -> None:
        """As uvicorn's, but a head still held when the app returns or raises (a response
        started and then abandoned) is written first: uvicorn closes the connection next,
        and the client must see the head before the close, not nothing."""

        async def flushing(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            finally:
                self._write_held()

        await super().run_asgi(flushing)


class CoalescingHttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's protocol whose requests use :class:`CoalescingCycle`."""

    def on_headers_complete(self) -> None:
        # The base method instantiates the module-level RequestResponseCycle; swap the name
        # in only for this call so other protocol instances are unaffected.
        original = httptools_impl.RequestResponseCycle
        httptools_impl.RequestResponseCycle = CoalescingCycle  # type: ignore[misc]
        try:
            super().on_headers_complete()
        finally:
            httptools_impl.RequestResponseCycle = original  # type: ignore[misc]


def coalescing_protocol() -> type[Any] | str:
    """The coalescing protocol class, or ``"httptools"`` if uvicorn's internals changed."""
    cycle = httptools_impl.RequestResponseCycle
    expected = ("send", "response_started", "chunked_encoding", "keep_alive", "disconnected")
    source_ok = all(hasattr(cycle, n) or n in cycle.__init__.__code__.co_names for n in expected)
    if not source_ok or "transport" not in cycle.__init__.__code__.co_names:
        logger.warning("uvicorn internals changed; serving without write coalescing")
        return "httptools"
    return CoalescingHttpToolsProtocol
