"""Rate limits shared by every gateway replica: exact, cheap, and failing open.

Exact: the window lives in Redis (``rate_limit_script``): at most ``limit`` admissions in
any ``window``, whichever replica admitted them, with Redis's clock.

Cheap: a replica that sees a key busy (several requests per lease period) takes a small
*lease* of slots in one call and admits from it locally, so a hot key costs one Redis round
trip per lease, not per request. Leases are only taken while the window is far from full
(at most a quarter of what remains, at most ``lease_max``, and no more than the replica used
in the last lease period); near the limit every request asks Redis, so the last slots go
exactly. A lease lives ``lease_ttl_s`` (250 ms); slots it leaves unused stay counted in the
window — the limiter can be stricter than the limit by that much, never looser.

Fails open: when Redis errors or does not answer within ``timeout_s``, requests are served,
``switchboard_gateway_rate_limit_fail_open_total`` counts them, a warning is logged at most
every 10 s, and Redis is not asked again for ``retry_s`` (so a frozen Redis costs one short
timeout per ``retry_s``, not one per request). It recovers by itself.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.models.limits import Limit
from gateway.services.rate_limit_script import ACQUIRE
from gateway.services.redis_guard import RedisGuard
from switchboard_common.lean_redis import LeanRedis, Script

FAIL_OPEN = Counter(
    "switchboard_gateway_rate_limit_fail_open_total",
    "Requests let through because Redis could not be asked.",
)
DECISIONS = Counter(
    "switchboard_gateway_rate_limit_decisions_total",
    "Rate-limit decisions, by outcome and by where they were made.",
    ("outcome", "source"),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.limit == 0:  # not enforced (Redis unavailable): no promises to make
            return []
        reset = str(max(0, int(-(-self.reset_s // 1)))).encode()  # whole seconds, rounded up
        headers = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(max(0, self.remaining)).encode()),
            (b"ratelimit-reset", reset),
        ]
        if not self.allowed:
            headers.append((b"retry-after", reset if reset != b"0" else b"1"))
        return headers


@dataclass(slots=True)
class _Lease:
    taken_at: float
    left: int
    remaining: int  # free in Redis after the lease was taken
    reset_at: float  # monotonic time the window's oldest slot frees
    last_seq: int = 0
    recent: list[float] = field(default_factory=list)  # request times, for the lease size


class RateLimiter:
    def __init__(
        self,
        redis: Redis,
        *,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        lease_max: int = 16,
        lease_ttl_s: float = 0.25,
        prefix: str = "gw:rl:",
        lean: LeanRedis | None = None,
    ) -> None:
        self.redis = redis
        # ``lean``: the script runs over the lean client (~0.1 ms a call instead of redis-py's
        # ~0.35 ms; see switchboard_common.lean_redis)
        self.script: Script = (lean.script if lean else redis.register_script)(ACQUIRE)
        self.timeout_s = timeout_s
        self.lease_max = lease_max
        self.lease_ttl_s = lease_ttl_s
        self.prefix = prefix
        self._leases: dict[str, _Lease] = {}
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.guard = RedisGuard("rate limits not enforced", retry_s)

    def room(self, key: str) -> int:
        """Slots this replica's last answer for ``key`` left: its lease's plus those free in
        Redis then (0 for a key it has not seen, or whose last request was refused)."""
        lease = self._leases.get(key)
        return 0 if lease is None else max(0, lease.left) + max(0, lease.remaining)

    async def hit(self, key: str, limit: Limit) -> Outcome:
        # Single flight per key: requests arriving while this replica is already asking
        # Redis for the key wait for that answer (and its lease) instead of asking too.
        pending = self._inflight.get(key)
        while pending is not None:
            await asyncio.shield(pending)
            pending = self._inflight.get(key)
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is not None:
            lease.recent.append(now)
            if lease.left > 0 and now - lease.taken_at < self.lease_ttl_s:
                lease.left -= 1
                DECISIONS.labels("allowed", "lease").inc()
                return Outcome(
                    True, limit.count, lease.remaining + lease.left, lease.reset_at - now
                )
        if self.guard.skipping(now):
            return self._fail_open()
        size = self._lease_size(lease, limit, now)
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = flight
        try:
            async with asyncio.timeout(self.timeout_s):
                granted, remaining, reset_ms = await self.script(
                    keys=[self.prefix + key, self.prefix + key + ":seq"],
                    args=[limit.count, int(limit.window_s * 1000), size],
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.guard.failed(exc, now)
            return self._fail_open()
        finally:
            del self._inflight[key]
            flight.set_result(None)
        granted, remaining, reset_s = int(granted), int(remaining), int(reset_ms) / 1000
        if granted == 0:
            self._leases.pop(key, None)
            DECISIONS.labels("limited", "redis").inc()
            return Outcome(False, limit.count, remaining, reset_s)
        recent = lease.recent[-64:] if lease is not None else [now]
        self._leases[key] = _Lease(now, granted - 1, remaining, now + reset_s, recent=recent)
        if len(self._leases) > 50_000:
            self._forget_idle(now)
        DECISIONS.labels("allowed", "redis").inc()
        return Outcome(True, limit.count, remaining + granted - 1, reset_s)

    def _lease_size(self, lease: _Lease | None, limit: Limit, now: float) -> int:
        """As many slots as this replica used for the key in the last lease period, while
        the window is far from full; 1 (exact) otherwise."""
        if lease is None or self.lease_max <= 1:
            return 1
        busy = sum(1 for t in lease.recent if now - t < self.lease_ttl_s)
        room = lease.remaining // 4
        return max(1, min(self.lease_max, busy, room))

    def _fail_open(self) -> Outcome:
        FAIL_OPEN.inc()
        DECISIONS.labels("allowed", "fail_open").inc()
        return Outcome(True, 0, 0, 0)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._leases.items() if now - v.taken_at > 60]:
            del self._leases[key]
