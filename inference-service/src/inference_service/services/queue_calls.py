"""The admission queue's Redis calls: each Lua script (``queue_scripts.py``) with its
argument layout, and Redis errors turned into :class:`QueueUnavailable` (503) where a
caller waits on the answer.

:class:`~inference_service.services.queue.RedisAdmissionQueue` decides *when* to call;
this module only knows *how*. The per-request calls (enqueue, poll, renew, release) go
over :class:`~switchboard_common.lean_redis.LeanRedis` when one is given, redis-py
otherwise; the registry and the snapshot always use redis-py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from inference_service.services import queue_scripts as lua
from inference_service.services.queue_lane import Lane, QueueEntry
from inference_service.services.queue_models import QueueKeys, QueueSettings, QueueUnavailable
from switchboard_common.lean_redis import Arg, LeanRedis, LeanScript, Script


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class QueueCalls:
    def __init__(
        self, redis: Redis, settings: QueueSettings, channel: str, lean: LeanRedis | None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.channel = channel  # where releases are announced (queue_notify.py)
        self.registry_key = f"{settings.key_prefix}:queues"
        script: Callable[[str], Script] = redis.register_script if lean is None else lean.script
        self._enqueue = script(lua.ENQUEUE)
        # an enqueue written at once (RedisAdmissionQueue.enter) needs the lean client
        self.enqueue_now = self._enqueue if isinstance(self._enqueue, LeanScript) else None
        self._poll = script(lua.POLL)
        self._abandon = script(lua.ABANDON)
        self._renew = script(lua.RENEW)
        self._snapshot = redis.register_script(lua.SNAPSHOT)

    async def call(self, call: Awaitable[Any]) -> Any:
        """``call``'s answer; a Redis error becomes a retryable :class:`QueueUnavailable`."""
        try:
            return await call
        except RedisError as exc:
            raise QueueUnavailable(
                "The inference admission queue is unavailable (Redis); retry later.",
                retry_after=self.settings.retry_after_s,
            ) from exc

    async def register(self, keys: QueueKeys) -> None:
        """List the queue in the registry (what :meth:`snapshot` reports)."""
        await self.call(self.redis.sadd(self.registry_key, keys.name))

    def enqueue_args(self, lane: Lane, priority: int, holder_id: str, score: str) -> list[Arg]:
        s = self.settings
        return [
            holder_id,
            priority,
            int(s.aging_s * 1_000_000),
            int(s.waiter_ttl_s * 1000),
            s.max_waiting_for(priority),
            lane.capacity,
            int(s.lease_s * 1000),
            self.channel,
            lane.keys.name,
            score,
        ]

    async def enqueue(self, lane: Lane, args: list[Arg]) -> tuple[int, int, str]:
        """``(status, position, score)``: 1 admitted, 0 waiting at ``position``, < 0 full."""
        status, position, new_score = await self.call(self._enqueue(lane.redis_keys, args))
        return int(status), int(position), _text(new_score)

    async def entered(self, entry: QueueEntry) -> tuple[int, int, str]:
        """The outcome of ``entry``'s enqueue call: the one sent ahead, else sent now."""
        if entry.pending is None:
            return await self.enqueue(entry.lane, entry.args)
        assert self.enqueue_now is not None  # only the lean client sends ahead
        call = self.enqueue_now.reply(entry.pending, entry.lane.redis_keys, entry.args)
        status, position, new_score = await self.call(call)
        return int(status), int(position), _text(new_score)

    async def poll(self, lane: Lane, priority: int, holder_id: str) -> tuple[int, int]:
        """``(status, position)``: 1 admitted, 0 still waiting, -2 purged (rejoin)."""
        s = self.settings
        args: list[Arg] = [
            holder_id,
            priority,
            int(s.waiter_ttl_s * 1000),
            lane.capacity,
            int(s.lease_s * 1000),
            self.channel,
            lane.keys.name,
        ]
        status, position = await self.call(self._poll(lane.redis_keys, args))
        return int(status), int(position)

    async def renew(self, lane: Lane, holder_id: str) -> int:
        """Extend a held lease: 1 renewed, 2 re-taken, 0 lost (slots full). Raises
        :class:`RedisError` (a renewer retries rather than failing the request)."""
        s = self.settings
        args: list[Arg] = [holder_id, int(s.lease_s * 1000), lane.capacity]
        return int(await self._renew([lane.keys.holders], args))

    async def abandon(self, keys: QueueKeys, priority: int, holder_id: str) -> None:
        """Leave the wait list or give the slot back. Raises :class:`RedisError`."""
        await self._abandon(
            [keys.holders, keys.wait, keys.heartbeats[priority]],
            [holder_id, self.channel, keys.name],
        )

    async def queue_names(self) -> list[str]:
        return sorted(_text(n) for n in await self.call(self.redis.smembers(self.registry_key)))

    async def counts(self, keys: QueueKeys) -> list[int]:
        """Slots in use, then live waiters per priority (``SNAPSHOT``)."""
        return [int(c) for c in await self.call(self._snapshot(keys.all))]
