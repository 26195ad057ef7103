"""Login throttling in Redis: lock an account after N failures, an IP after M.

Counters live ``lockout_window_s`` from the first failure (fixed window). While a counter
is at its limit every login for that account (or from that IP) gets a 429 problem with
``Retry-After`` — even with the right password, so guessing cannot continue. Unknown
usernames are counted like real ones (no enumeration through lockout behaviour). Usernames
are hashed into the key. A success clears the account counter, not the IP counter.

Redis down → 503: without a counter, guessing would be unlimited (fail closed).
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from auth_service.core.errors import LoginLocked
from switchboard_common import ServiceUnavailable


def _user_key(username: str) -> str:
    return "auth:lockout:user:" + hashlib.sha256(username.encode()).hexdigest()[:32]


def _ip_key(ip: str) -> str:
    return "auth:lockout:ip:" + ip[:64]


class LoginThrottle:
    def __init__(
        self, redis: Redis, *, max_failures: int, ip_max_failures: int, window_s: int
    ) -> None:
        self.redis = redis
        self.max_failures = max_failures
        self.ip_max_failures = ip_max_failures
        self.window_s = window_s

    async def ensure_allowed(self, username: str, ip: str | None) -> None:
        keys = [_user_key(username)] + ([_ip_key(ip)] if ip else [])
        limits = [self.max_failures, self.ip_max_failures]
        try:
            counts = await self.redis.mget(keys)
            for key, count, limit in zip(keys, counts, limits, strict=False):
                if count is not None and int(count) >= limit:
                    ttl = int(await self.redis.ttl(key))
                    raise LoginLocked(
                        "Too many failed logins; try again later.",
                        retry_after=ttl if ttl > 0 else self.window_s,
                    )
        except RedisError as exc:
            raise self._unavailable() from exc

    async def record_failure(self, username: str, ip: str | None) -> None:
        try:
            pipe = self.redis.pipeline(transaction=True)
            for key in [_user_key(username)] + ([_ip_key(ip)] if ip else []):
                pipe.set(key, 0, ex=self.window_s, nx=True)
                pipe.incr(key)
            await pipe.execute()
        except RedisError as exc:
            raise self._unavailable() from exc

    async def clear(self, username: str) -> None:
        try:
            await self.redis.delete(_user_key(username))
        except RedisError as exc:
            raise self._unavailable() from exc

    @staticmethod
    def _unavailable() -> ServiceUnavailable:
        return ServiceUnavailable("Login is temporarily unavailable.", retry_after=1)
