"""Tell the gateways what was revoked, through the auth service's Redis (contract A).

- session revoked: ``SET auth:revoked:sid:{sid} 1 EX <access TTL + 60>`` (a gateway checks
  this on every request) and ``PUBLISH auth:revocations {"sid": …}`` (a gateway drops
  cached state at once);
- API key deleted or expired: ``PUBLISH auth:revocations {"api_key_id": …}``;
- user disabled: every session as above, and ``PUBLISH auth:revocations {"sub": …}``.

The database change is committed first; publishing is idempotent and is repeated when the
same revocation is asked for again, so a 503 here (Redis down) is fixed by retrying.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from switchboard_common import ServiceUnavailable

REVOCATION_CHANNEL = "auth:revocations"
REVOKED_SID_KEY = "auth:revoked:sid:{sid}"

logger = logging.getLogger("auth.revocations")


def revoked_sid_key(sid: str) -> str:
    return REVOKED_SID_KEY.format(sid=sid)


class RevocationPublisher:
    def __init__(self, redis: Redis, marker_ttl_s: int) -> None:
        self.redis = redis
        self.marker_ttl_s = marker_ttl_s

    async def sessions_revoked(self, sids: Sequence[str]) -> None:
        if not sids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for sid in sids:
            pipe.set(revoked_sid_key(sid), 1, ex=self.marker_ttl_s)
            pipe.publish(REVOCATION_CHANNEL, json.dumps({"sid": sid}))
        await self._run(pipe, "sessions", len(sids))

    async def api_key_revoked(self, api_key_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(REVOCATION_CHANNEL, json.dumps({"api_key_id": api_key_id}))
        await self._run(pipe, "api_key", 1)

    async def user_disabled(self, sub: str, sids: Sequence[str]) -> None:
        await self.sessions_revoked(sids)
        pipe = self.redis.pipeline(transaction=False)
        pipe.publish(REVOCATION_CHANNEL, json.dumps({"sub": sub}))
        await self._run(pipe, "user", 1)

    async def _run(self, pipe: Pipeline, what: str, count: int) -> None:
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            logger.error(
                "revocation not published", extra={"what": what, "error": type(exc).__name__}
            )
            raise ServiceUnavailable(
                "The revocation was recorded but could not be propagated to the gateways; "
                "retry the request.",
                retry_after=1,
            ) from exc
        logger.info("revocation published", extra={"what": what, "count": count})
