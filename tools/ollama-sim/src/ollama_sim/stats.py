"""Counters behind ``GET /_sim/stats``.

* ``requests`` - per path, every request except the ``/_sim/*`` admin routes.
* ``active`` / ``queued`` - live gauges read from the admission queue.
* ``max_active_seen`` - highest ``active`` since start or the last reset.
* ``completed`` - inference jobs (generate, chat, embed) that delivered their full response.
* ``cancelled`` - admitted jobs that stopped because the client disconnected before the response
  was complete (mid-stream, during the first-token wait, or while a non-streamed answer was
  being produced).
* ``queue_abandoned`` - clients that disconnected while still waiting for a slot.
* ``rejected`` - 503 answers because the queue was full.
* ``failed`` - requests that received an injected fault.
* ``hanging`` - live gauge of requests held by ``fail_mode=hang``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    completed: int = 0
    cancelled: int = 0
    queue_abandoned: int = 0
    rejected: int = 0
    failed: int = 0
    hanging: int = 0

    def clear(self) -> None:
        """Reset counters (live gauges are kept)."""
        self.requests.clear()
        self.completed = self.cancelled = self.queue_abandoned = 0
        self.rejected = self.failed = 0

    def snapshot(self, active: int, queued: int, max_active_seen: int) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "active": active,
            "queued": queued,
            "max_active_seen": max_active_seen,
            "cancelled": self.cancelled,
            "completed": self.completed,
            "queue_abandoned": self.queue_abandoned,
            "rejected": self.rejected,
            "failed": self.failed,
            "hanging": self.hanging,
        }
