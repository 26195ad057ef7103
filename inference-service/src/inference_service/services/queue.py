"""The admission queue: bounded concurrency per backend+model, shared by all replicas via Redis.

Ollama queues blindly (ollama#7758) and knows no users or priorities, so every generation
asks :meth:`RedisAdmissionQueue.admit` for a slot first::

    async with queue.admit(backend, model, priority, on_position=send_position):
        ...  # talk to Ollama; one slot of backend|model is ours

Algorithm (docs/queue.md#algorithm has it whole; the Lua side is in ``queue_scripts.py``):

1. **Slots are leases** in ``{Q}:holders`` (scored by expiry, Redis clock), renewed every
   ``lease_s / 3`` while held; a dead replica's slots are reclaimed after ``lease_s``. The
   renewer, the admission span and the metrics start once the caller has sent its Ollama
   request (``queue_lane.py``).
2. **Enqueue.** A request without a free slot joins ``{Q}:wait`` scored
   ``enqueued_at - priority * aging_s`` (aged priority, FIFO on ties), bounded per
   priority (:class:`QueueFull`). :meth:`RedisAdmissionQueue.enter` sends this call ahead
   of ``admit`` for the streaming path.
3. **Wait** for a release on ``<prefix>:released`` or ``poll_interval_s``, then ``POLL``:
   the best waiters take the free slots, the others learn their position (→
   ``on_position``) and refresh their heartbeat. A waiter nobody watches skips the poll
   while fewer releases than waiters ahead of it happened (no herd at saturation). Dead
   replicas' waiters are purged after ``waiter_ttl_s``; ``wait_timeout_s`` →
   :class:`QueueWaitTimeout`.
4. **Leave.** Exiting the context, however it exits, runs ``ABANDON`` in a shielded task.

The Lua calls (``queue_calls.py``: enqueue, poll, renew, release) go over
:class:`~switchboard_common.lean_redis.LeanRedis` when the lifespan provides one: the
enqueue is on every generation's path to its first token, and redis-py's per-call cost
there was ~0.25 ms of a ~0.35 ms round trip. They then make no Redis client spans; the
wait itself is one ``inference.admission`` span.

Redis errors fail closed: :class:`QueueUnavailable` (503) rather than unbounded load on
Ollama. A lease renewal that fails is logged and retried; the lease expires if Redis stays
away, after which the slot may be given to someone else while the request still runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from inference_service.core.deferred import Deferred
from inference_service.services.admission import AdmissionEntry
from inference_service.services.queue_calls import QueueCalls
from inference_service.services.queue_lane import AdmissionSpan, Lane, QueueEntry
from inference_service.services.queue_metrics import queue_metrics
from inference_service.services.queue_models import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    QueueFull,
    QueueKeys,
    QueueKeySnapshot,
    QueueSettings,
    QueueSnapshot,
    QueueUnavailable,
    QueueWaitTimeout,
)
from inference_service.services.queue_notify import ReleaseNotifier
from switchboard_common.lean_redis import LeanRedis

logger = logging.getLogger(__name__)

PositionCallback = Callable[[int], Awaitable[None]]


class RedisAdmissionQueue:
    """An :class:`AdmissionGate` whose slots and queue live in Redis (see module docstring).

    Call :meth:`start` once (starts the pub/sub listener) and :meth:`aclose` at shutdown;
    without ``start`` waiters still work, by polling only.
    """

    def __init__(
        self, redis: Redis, settings: QueueSettings | None = None, *, lean: LeanRedis | None = None
    ) -> None:
        self.redis = redis
        self.settings = settings or QueueSettings()
        self.channel = f"{self.settings.key_prefix}:released"
        self.notifier = ReleaseNotifier(redis, self.channel)
        self.calls = QueueCalls(redis, self.settings, self.channel, lean)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        # holder ids: this process's random prefix + a counter (unique like a uuid4 per
        # request, without its urandom call on the first token's path); the random part
        # keeps a restarted container (same hostname, pid 1) from reusing a live lease's id
        self._holder_prefix = f"{self.replica}:{uuid.uuid4().hex[:16]}:"
        self._serials = itertools.count(1)
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._known: set[str] = set()  # queues registered by this process
        self._background: set[asyncio.Task[None]] = set()  # releases in flight
        self._renewers: set[asyncio.Task[None]] = set()
        self.metrics = queue_metrics()

    async def start(self) -> None:
        await self.notifier.start()

    async def aclose(self) -> None:
        await self.notifier.aclose()
        for task in list(self._renewers):
            task.cancel()
        if self._background:  # releases still in flight
            await asyncio.wait(list(self._background), timeout=5)

    def enter(self, backend: str, model: str, priority: int) -> QueueEntry | None:
        """Send the enqueue call for a slot of ``backend|model`` now, without yielding to
        the loop, for :meth:`admit` to wait on later (``entry=``): the round trip then runs
        beside the request's remaining work. None when it cannot go out at once (no lean
        client, the queue's first use in this process, no idle connection): ``admit``
        then sends it itself. An entry ``admit`` never takes must be :meth:`abandon`-ed."""
        lean = self.calls.enqueue_now
        if lean is None or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            return None
        lane = self._lane(backend, model)
        if lane.keys.name not in self._known:
            return None
        entry = self._new_entry(lane, priority)
        entry.pending = lean.send_now(lane.redis_keys, entry.args)
        return entry if entry.pending is not None else None

    def _new_entry(self, lane: Lane, priority: int) -> QueueEntry:
        """A new holder's place in ``lane``: its id, its enqueue arguments, and the moment
        its wait starts (the release count and event it waits on, as of now)."""
        holder_id = f"{self._holder_prefix}{next(self._serials)}"
        name = lane.keys.name
        return QueueEntry(
            lane,
            priority,
            holder_id,
            self.calls.enqueue_args(lane, priority, holder_id, ""),
            None,
            time.monotonic(),
            time.time_ns(),
            self.notifier.event(name),
            self.notifier.releases(name),
        )

    def abandon(self, entry: AdmissionEntry) -> None:
        """Undo an :meth:`enter` that :meth:`admit` never took: once its reply is in, the
        place or slot it may have got is given up (in the background)."""
        if isinstance(entry, QueueEntry):
            self._spawn(self._abandon_entry(entry), self._background)

    async def _abandon_entry(self, entry: QueueEntry) -> None:
        if entry.pending is not None:
            with suppress(Exception):
                await entry.pending.reply()
        await self._abandon_quietly(entry.lane.keys, entry.priority, entry.holder_id)

    @asynccontextmanager
    async def admit(
        self,
        backend: str,
        model: str,
        priority: int,
        on_position: PositionCallback | None = None,
        entry: AdmissionEntry | None = None,
    ) -> AsyncIterator[None]:
        """Hold one slot of ``backend|model`` for the duration of the ``async with`` block
        (``entry``: its enqueue call, already sent by :meth:`enter` for the same lane and
        priority)."""
        if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}")
        if not isinstance(entry, QueueEntry):  # None (or another gate's: not ours to wait on)
            entry = self._new_entry(self._lane(backend, model), priority)
        lane, holder_id = entry.lane, entry.holder_id
        span = AdmissionSpan(backend, model, priority, started=entry.started_ns)
        waited, waiting = await self._wait_for_slot(entry, on_position, span)
        # the admission's bookkeeping (span, metrics, the lease renewer) waits until the caller
        # has sent its Ollama request and waits for the answer: off the first token's path
        held = Deferred(partial(self._hold, lane, priority, holder_id, span, waited, waiting))
        try:
            yield
        finally:
            try:
                held.result().cancel()  # the renewer
                lane.holding.dec()
            finally:
                await self._leave(lane.keys, priority, holder_id)

    def _lane(self, backend: str, model: str) -> Lane:
        """The lane of ``backend|model`` (per spelling; both spellings of a model name the
        same Redis keys and capacity: :class:`QueueKeys` normalizes)."""
        lane = self._lanes.get((backend, model))
        if lane is None:
            lane = self._lanes[(backend, model)] = Lane(self.settings, backend, model, self.metrics)
        return lane

    def _hold(
        self,
        lane: Lane,
        priority: int,
        holder_id: str,
        span: AdmissionSpan,
        waited: float,
        waiting: Deferred[None],
    ) -> asyncio.Task[None]:
        """Record an admission and start renewing its lease (the first renewal is due
        ``lease_s / 3`` later, so a renewer started a turn late cannot let it lapse)."""
        waiting.flush()  # its gauge increment first
        span.close()
        lane.waiting.dec()
        lane.admitted(priority).inc()
        lane.wait_seconds.observe(waited)
        lane.holding.inc()
        return self._spawn(self._keep_lease(lane, holder_id), self._renewers)

    # -- waiting ----------------------------------------------------------------------------

    async def _wait_for_slot(
        self, entry: QueueEntry, on_position: PositionCallback | None, span: AdmissionSpan
    ) -> tuple[float, Deferred[None]]:
        """Wait for a slot: ``(seconds waited, the deferred waiting-gauge increment)``."""
        s = self.settings
        lane, priority, holder_id = entry.lane, entry.priority, entry.holder_id
        keys = lane.keys
        backend = keys.backend
        started, wake, seen = entry.started, entry.wake, entry.seen
        deadline = started + s.wait_timeout_s
        last_poll = started
        # counted while the enqueue call is in flight rather than before sending it
        waiting = Deferred(lane.waiting.inc)
        try:
            if entry.pending is None:  # not sent ahead by enter(): send it now
                await self._register(keys)
            status, position, score = await self.calls.entered(entry)
            if status < 0:
                self.metrics.rejected.labels(backend, "full").inc()
                raise QueueFull(
                    f"The queue for model '{keys.model}' is full at priority "
                    f"{priority}; retry later.",
                    retry_after=s.retry_after_s,
                )
            reported = 0
            while status == 0:
                if on_position is not None and position != reported:
                    reported = position
                    await on_position(position)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.metrics.rejected.labels(backend, "timeout").inc()
                    raise QueueWaitTimeout(
                        f"No inference slot for '{keys.name}' became free within "
                        f"{s.wait_timeout_s:g} s; retry later.",
                        retry_after=s.retry_after_s,
                    )
                pause = s.poll_interval_s * random.uniform(0.8, 1.2)  # noqa: S311 (jitter)
                with suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(pause, remaining))
                wake = self.notifier.event(keys.name)
                releases = self.notifier.releases(keys.name)
                if (
                    on_position is None
                    and releases - seen < position - 1
                    # 0.8: the jittered pause may end just short of a full interval
                    and time.monotonic() - last_poll < 0.8 * s.poll_interval_s
                ):
                    continue  # position - 1 waiters are still ahead: no slot for us yet
                seen, last_poll = releases, time.monotonic()
                status, position = await self.calls.poll(lane, priority, holder_id)
                if status == -2:  # purged (heartbeat lapsed): rejoin at the same place
                    args = self.calls.enqueue_args(lane, priority, holder_id, score)
                    status, position, _ = await self.calls.enqueue(lane, args)
        except BaseException as exc:
            span.mark_end()
            waiting.flush()
            lane.waiting.dec()
            span.close(exc)
            if isinstance(exc, QueueUnavailable):
                self.metrics.rejected.labels(backend, "unavailable").inc()
            await self._leave(keys, priority, holder_id)
            raise
        span.mark_end()
        return time.monotonic() - started, waiting

    async def _register(self, keys: QueueKeys) -> None:
        if keys.name not in self._known:
            await self.calls.register(keys)
            self._known.add(keys.name)

    # -- holding and leaving ----------------------------------------------------------------

    async def _keep_lease(self, lane: Lane, holder_id: str) -> None:
        keys = lane.keys
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                status = await self.calls.renew(lane, holder_id)
            except RedisError as exc:
                logger.warning("queue lease renewal failed for %s: %s", keys.name, exc)
                continue
            if status != 1:  # 2: re-taken, 0: lost and the slots are full
                self.metrics.lease_lost.labels(keys.backend).inc()
                logger.warning(
                    "queue lease %s on %s had expired (%s)", holder_id, keys.name, status
                )

    async def _leave(self, keys: QueueKeys, priority: int, holder_id: str) -> None:
        """Leave the queue / release the slot; survives the caller being cancelled."""
        task = self._spawn(self._abandon_quietly(keys, priority, holder_id), self._background)
        await asyncio.shield(task)

    async def _abandon_quietly(self, keys: QueueKeys, priority: int, holder_id: str) -> None:
        try:
            await self.calls.abandon(keys, priority, holder_id)
        except RedisError as exc:
            logger.warning("queue release of %s failed (lease will expire): %s", keys.name, exc)
        self.notifier.wake(keys.name, count=False)

    @staticmethod
    def _spawn(
        coro: Coroutine[Any, Any, None], into: set[asyncio.Task[None]]
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        into.add(task)  # a strong reference until done
        task.add_done_callback(into.discard)
        return task

    # -- observing --------------------------------------------------------------------------

    async def snapshot(self) -> QueueSnapshot:
        """Slots in use / capacity and live waiters per priority, for every known queue."""
        queues: list[QueueKeySnapshot] = []
        listed: set[str] = set()
        for name in await self.calls.queue_names():
            backend, _, model = name.partition("|")
            keys = QueueKeys(self.settings.key_prefix, backend, model)
            if keys.name in listed:  # a name registered before names were normalized
                continue
            listed.add(keys.name)
            model = keys.model
            counts = await self.calls.counts(keys)
            capacity = self.settings.capacity(backend, model)
            queues.append(QueueKeySnapshot.from_counts(backend, model, capacity, counts))
        return QueueSnapshot(queues=queues)
