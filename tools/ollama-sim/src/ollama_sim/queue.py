"""Parallel slots plus a bounded FIFO wait queue (``num_parallel`` / ``max_queue``).

At most ``num_parallel`` jobs are active; up to ``max_queue`` more wait in arrival order; any
further request raises :class:`QueueFull` (the app answers 503 with Ollama's message).  Limits
are read on every call, so changing them through ``/_sim/config`` takes effect immediately.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from .config import SimConfig

BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"


class QueueFull(Exception):
    """Raised by :meth:`AdmissionQueue.acquire` when no slot and no queue place is free."""


class AdmissionQueue:
    def __init__(self, config: Callable[[], SimConfig]) -> None:
        self._config = config
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.max_active_seen = 0

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def _grant(self) -> None:
        self._active += 1
        self.max_active_seen = max(self.max_active_seen, self._active)

    async def acquire(self) -> None:
        """Wait for a slot; raises :class:`QueueFull` if the wait queue is full."""
        cfg = self._config()
        if self._active < cfg.num_parallel and not self._waiters:
            self._grant()
            return
        if self.queued >= cfg.max_queue:
            raise QueueFull(BUSY_MESSAGE)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was granted just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self._active -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters (also called after ``num_parallel`` changes)."""
        limit = self._config().num_parallel
        while self._waiters and self._active < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._grant()
                waiter.set_result(None)

    def reset_peak(self) -> None:
        self.max_active_seen = self._active
