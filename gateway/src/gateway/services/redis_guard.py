"""Failing open on Redis, one policy for every gateway feature that asks it per request.

The rate limiter, token budgets and the response caches each wait at most a few tens of
milliseconds for Redis. After a failure (error, refused, slower than that) Redis is skipped
for ``retry_s`` — so an outage or a frozen Redis costs clients one short wait per second,
not one per request — and a warning is logged at most every ``WARN_EVERY_S``. What failing
open means (serve unlimited, uncached, unbudgeted) is each feature's own decision.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("switchboard.gateway.redis")

WARN_EVERY_S = 10.0


class RedisGuard:
    __slots__ = ("_last_warning", "_skip_until", "retry_s", "what")

    def __init__(self, what: str, retry_s: float = 1.0) -> None:
        self.what = what  # "rate limits not enforced", … (the log line's subject)
        self.retry_s = retry_s
        self._skip_until = 0.0
        self._last_warning = 0.0

    def skipping(self, now: float | None = None) -> bool:
        """Whether Redis is being skipped after a recent failure."""
        return (time.monotonic() if now is None else now) < self._skip_until

    def failed(self, exc: BaseException, now: float | None = None) -> None:
        """Redis failed: skip it for ``retry_s``, and say so (at most every 10 s)."""
        now = time.monotonic() if now is None else now
        self._skip_until = now + self.retry_s
        if now - self._last_warning > WARN_EVERY_S:
            self._last_warning = now
            logger.warning("%s, Redis unavailable: %s", self.what, type(exc).__name__)
