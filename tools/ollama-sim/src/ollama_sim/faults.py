"""Failure injection for the inference routes (generate, chat, embed, embeddings).

``fail_mode`` picks the failure; ``fail_count`` says how many upcoming inference requests get it
(``-1`` = all, otherwise decremented per failed request until ``0``, when requests succeed again).
Faults are drawn after the request is parsed and validated (a malformed request still gets its
400/404) and before it is admitted to the queue.

* ``refuse`` - the TCP connection is aborted without any response bytes.  Under uvicorn the
  ASGI ``receive`` callable is bound to the connection's request cycle, whose ``transport`` we
  ``abort()`` (the client sees a reset / "server disconnected").  Under a server that does not
  expose it, the response raises instead, which such servers turn into a dropped connection or
  a bare 500.
* ``error_500`` - status 500 ``{"error": "simulated internal error"}`` before the first byte.
* ``error_after_tokens`` - handled by the generation stream (``fail_after_tokens`` chunks, then a
  ``{"error": ...}`` line, status 200, no ``done``; 500 when not streaming).
* ``hang`` - the request is never answered; it holds no queue slot and ends when the client
  disconnects.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .config import FailMode, SimConfig
from .stats import Stats


def take_fault(config: SimConfig) -> FailMode | None:
    """Consume one failure from ``config`` if one is armed; returns the mode or ``None``."""
    if config.fail_mode == "none" or config.fail_count == 0:
        return None
    if config.fail_count > 0:
        config.fail_count -= 1
    return config.fail_mode


def error_after_tokens_message(n: int) -> str:
    return f"simulated failure after {n} tokens"


class RefuseResponse(Response):
    """ASGI response that drops the connection without sending anything."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle: Any = getattr(receive, "__self__", None)
        transport: Any = getattr(cycle, "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            raise ConnectionAbortedError("simulated refused connection")
        transport.abort()
        # Let the server observe connection_lost so it does not try to answer with a 500.
        for _ in range(3):
            await asyncio.sleep(0)


class HangResponse(Response):
    """ASGI response that never answers; returns once the client has gone away."""

    def __init__(self, stats: Stats) -> None:
        super().__init__(status_code=200)
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats.hanging += 1
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
        finally:
            self.stats.hanging -= 1
