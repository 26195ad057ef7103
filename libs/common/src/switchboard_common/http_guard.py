"""What uvicorn's httptools protocol lacks at the edge: a deadline for the request head and
problem+json answers for requests it cannot parse.

uvicorn (0.5x, httptools) waits forever for a request head that never completes, so a
slowloris client that sends a few header bytes now and then holds its socket as long as
it likes; and it answers unparseable requests (bare CR in a header, conflicting
``Content-Length``, ``Content-Length`` with ``Transfer-Encoding``) with a text/plain 400.
:func:`guarded` returns a subclass of a protocol class that:

- closes a connection whose request head is not complete ``head_timeout_s`` after the
  connection opened or the request's first byte arrived: with a 408 problem when part of
  a head arrived, silently when nothing did (as nginx does; a browser's preconnected
  socket is not answered); idle keep-alive connections stay under uvicorn's own
  ``timeout_keep_alive``;
- answers a parse error with a 400 problem (and still closes the connection).

It hooks uvicorn's parser callbacks (``on_message_begin``, ``on_headers_complete``) and
``send_400_response``; ``gateway/tests/test_bad_input.py`` pins the behaviour against
the installed uvicorn, through a real gateway process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from switchboard_common.problems import PROBLEM_CONTENT_TYPE, problem_bytes

logger = logging.getLogger("switchboard.server")

_REASONS = {400: b"Bad Request", 408: b"Request Timeout"}


def problem_response(status: int, detail: str) -> bytes:
    """A whole HTTP/1.1 problem response that closes the connection, as raw bytes."""
    body = problem_bytes(status, detail=detail)
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, _REASONS[status], PROBLEM_CONTENT_TYPE.encode(), len(body))
    )
    return head + body


def guarded(base: type[Any], head_timeout_s: float) -> type[Any]:
    """``base`` (uvicorn's httptools protocol or a subclass) with the head deadline and
    problem+json parse errors."""

    class GuardedHttpToolsProtocol(base):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None
        _head_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started = True
            self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._head_started = False
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._disarm_head_timer()
            detail = "The request is not valid HTTP/1.1 (header syntax or body framing)."
            self.transport.write(problem_response(400, detail))
            self.transport.close()

        def _arm_head_timer(self) -> None:
            # The earliest deadline wins: a head that started on a fresh connection must
            # complete within head_timeout_s of the connection opening.
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(head_timeout_s, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # a pipelined head behind a response still being written: the response's
                # own timeouts govern; check again later
                self._arm_head_timer()
                return
            if self._head_started:
                logger.info("request head not complete within %s s; closing", head_timeout_s)
                detail = f"The request head did not arrive within {head_timeout_s:g} s."
                self.transport.write(problem_response(408, detail))
            self.transport.close()

    GuardedHttpToolsProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedHttpToolsProtocol
