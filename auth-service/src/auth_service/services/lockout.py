"""Login throttling in Redis: at most N password checks per account, M per client IP.

Every login *attempt* is counted before its password is verified, in one atomic Lua
script per attempt: when a counter (account or IP) has already reached its limit the
attempt is refused with a 429 problem and ``Retry-After`` — even with the right password,
so guessing cannot continue — and nothing is counted; otherwise both counters are
incremented together. Checking and counting in one step is what makes the limit hold
under concurrency: N parallel guesses cannot all pass a check that runs before any of
them has been recorded as a failure (argon2 takes a while), so at most ``max_failures``
passwords per account (``ip_max_failures`` per IP) are ever verified in a window.

Counters live ``window_s`` from the first attempt (fixed window). Unknown usernames are
counted like real ones (no enumeration through lockout behaviour). Usernames are hashed
into the key.

After the verification:

- a failure keeps the attempt counted (it *is* the failure);
- a success clears the account counter and forgives its own attempt on the IP counter
  (decrement), so the IP counter keeps counting failures — and attempts in flight — only:
  users behind one NAT who log in successfully never lock each other out;
- an attempt that never reached verification (hashing busy, 503) is forgiven on both.

Redis down → 503: without a counter, guessing would be unlimited (fail closed).
"""

from __future__ import annotations

import hashlib
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from auth_service.core.errors import LoginLocked
from switchboard_common import ServiceUnavailable

# KEYS: the counters; ARGV: window (ms), then one limit per key.
# Returns {0} when counted, {1, ms-until-unlocked} when a counter is at its limit.
_ATTEMPT = """
for i, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= tonumber(ARGV[i + 1]) then
    return {1, redis.call('PTTL', key)}
  end
end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then
    redis.call('PEXPIRE', key, ARGV[1])
  end
end
return {0, 0}
"""

# Give one attempt back: decrement only a live positive counter (never create a key
# without expiry, never go below zero).
_FORGIVE = """
for _, key in ipairs(KEYS) do
  local count = tonumber(redis.call('GET', key) or '0')
  if count > 0 then
    redis.call('DECR', key)
  end
end
return 0
"""


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
        self._attempt = redis.register_script(_ATTEMPT)
        self._forgive = redis.register_script(_FORGIVE)

    async def count_attempt(self, username: str, ip: str | None) -> None:
        """Count one attempt on the account and IP counters; 429 when either is locked."""
        keys = [_user_key(username)] + ([_ip_key(ip)] if ip else [])
        limits = [self.max_failures, self.ip_max_failures][: len(keys)]
        try:
            locked, pttl = await self._attempt(keys=keys, args=[self.window_s * 1000, *limits])
        except RedisError as exc:
            raise self._unavailable() from exc
        if int(locked):
            pttl = int(pttl)
            raise LoginLocked(
                "Too many failed logins; try again later.",
                retry_after=math.ceil(pttl / 1000) if pttl > 0 else self.window_s,
            )

    async def succeeded(self, username: str, ip: str | None) -> None:
        """A correct password: clear the account counter, give the IP its attempt back."""
        try:
            await self.redis.delete(_user_key(username))
            if ip:
                await self._forgive(keys=[_ip_key(ip)])
        except RedisError as exc:
            raise self._unavailable() from exc

    async def not_checked(self, username: str, ip: str | None) -> None:
        """The attempt never reached verification (e.g. hashing busy): give it back."""
        try:
            await self._forgive(keys=[_user_key(username)] + ([_ip_key(ip)] if ip else []))
        except RedisError as exc:
            raise self._unavailable() from exc

    @staticmethod
    def _unavailable() -> ServiceUnavailable:
        return ServiceUnavailable("Login is temporarily unavailable.", retry_after=1)
