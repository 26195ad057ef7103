"""Revoked sessions, users and API keys, seen within a second, with no Redis call per request.

The auth service publishes every revocation on ``auth:revocations`` and marks revoked
sessions with ``auth:revoked:sid:{sid}`` keys (TTL: the access-token lifetime). The gateway:

- subscribes to the channel and, on a message, remembers the revocation in memory and evicts
  matching cached credentials, so the next request with that token is refused;
- checks the ``sid`` key once per token, when the token is first verified (a revocation
  published while this gateway was not listening is still seen);
- after its subscription drops and comes back, forgets every cached credential, so nothing
  revoked during the gap survives.

If Redis is unreachable, the per-token check fails open (counted in
``switchboard_gateway_revocation_check_errors_total`` and logged): a revoked session then
stays usable until its access token expires (15 minutes by default). Refusing every new
login while Redis is down is the worse failure for a gateway; see docs/auth.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

logger = logging.getLogger("switchboard.gateway.revocations")

CHANNEL = "auth:revocations"
SID_KEY = "auth:revoked:sid:{sid}"
REMEMBER_S = 3600.0  # longer than any access token lives

CHECK_ERRORS = Counter(
    "switchboard_gateway_revocation_check_errors_total",
    "Revocation checks that could not reach Redis (the request was let through).",
)
MESSAGES = Counter(
    "switchboard_gateway_revocations_total", "Revocation messages received.", ("kind",)
)


class Revocations:
    """In-memory view of recent revocations, fed by Redis pub/sub."""

    def __init__(
        self, redis: Redis, listener: Redis, on_revoked: Callable[[dict[str, str]], None]
    ) -> None:
        self.redis = redis  # commands, with timeouts
        self.listener = listener  # pub/sub, no read timeout
        self.on_revoked = on_revoked
        self.sids: dict[str, float] = {}
        self.subs: dict[str, float] = {}  # user id -> when disabled
        self.api_keys: dict[str, float] = {}
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="revocations")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sid_revoked(self, sid: str | None) -> bool:
        return sid is not None and sid in self.sids

    def user_revoked_after(self, sub: str, issued_at: float) -> bool:
        revoked_at = self.subs.get(sub)
        return revoked_at is not None and issued_at <= revoked_at

    def api_key_revoked(self, api_key_id: str | None) -> bool:
        return api_key_id is not None and api_key_id in self.api_keys

    async def sid_marked(self, sid: str) -> bool:
        """Whether auth marked this session revoked (fails open when Redis is unreachable)."""
        try:
            return bool(await self.redis.exists(SID_KEY.format(sid=sid)))
        except (RedisError, OSError) as exc:
            CHECK_ERRORS.inc()
            logger.warning("revocation check skipped, Redis unreachable: %s", type(exc).__name__)
            return False

    def record(self, message: dict[str, str]) -> None:
        now = time.time()
        for kind, store in (("sid", self.sids), ("sub", self.subs), ("api_key_id", self.api_keys)):
            value = message.get(kind)
            if isinstance(value, str) and value:
                store[value] = now
                MESSAGES.labels(kind).inc()
        self.on_revoked(message)
        self._forget_old(now)

    def _handle(self, message: dict[str, object]) -> None:
        if message.get("type") != "message":
            return
        try:
            payload = json.loads(message["data"])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if isinstance(payload, dict):
            self.record({k: v for k, v in payload.items() if isinstance(v, str)})

    def _forget_old(self, now: float) -> None:
        for store in (self.sids, self.subs, self.api_keys):
            if len(store) > 10_000 or (store and next(iter(store.values())) < now - REMEMBER_S):
                for key in [k for k, t in store.items() if t < now - REMEMBER_S]:
                    del store[key]

    async def _listen_forever(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self.listener.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    # Anything revoked while we were not listening: start from a clean cache.
                    self.on_revoked({"all": "resubscribed"})
                    self.listening.set()
                    backoff = 0.2
                    last_ping = last_pong = time.monotonic()
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        now = time.monotonic()
                        if message is not None:
                            if message.get("type") == "pong":
                                last_pong = now
                            else:
                                self._handle(message)
                        if now - last_ping > 10:
                            await pubsub.ping()  # a closed connection raises here
                            last_ping = now
                        if now - last_pong > 35:  # a silently dead one stops answering
                            raise RedisConnectionError("no PONG on the revocation channel")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.listening.clear()
                logger.warning("revocation channel lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
