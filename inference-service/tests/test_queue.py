"""The Redis admission queue in one process: capacity, priority, aging, limits, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import (
    QueueFull,
    QueueKeys,
    QueueSettings,
    QueueUnavailable,
    QueueWaitTimeout,
)
from switchboard_common.redis_client import create_redis

B, M = "http://sim:11434", "llama3.2:latest"
MakeQueue = Callable[..., RedisAdmissionQueue]


@pytest.fixture
async def make_queue(redis: Redis) -> AsyncIterator[MakeQueue]:
    """Queues on the test's own Redis db; fast timings unless a test overrides them."""
    made: list[RedisAdmissionQueue] = []

    def make(**overrides: Any) -> RedisAdmissionQueue:
        knobs: dict[str, Any] = {
            "default_slots": 1,
            "aging_s": 1000.0,
            "poll_interval_s": 0.05,
            "wait_timeout_s": 10.0,
            **overrides,
        }
        queue = RedisAdmissionQueue(redis, QueueSettings(**knobs))
        made.append(queue)
        return queue

    yield make
    for queue in made:
        await queue.aclose()


class Holder:
    """A task that holds a slot until ``release()``."""

    def __init__(self, queue: RedisAdmissionQueue, priority: int = 5) -> None:
        self.entered = asyncio.Event()
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._run(queue, priority))

    async def _run(self, queue: RedisAdmissionQueue, priority: int) -> None:
        async with queue.admit(B, M, priority):
            self.entered.set()
            await self.done.wait()

    async def release(self) -> None:
        self.done.set()
        await self.task


async def held(queue: RedisAdmissionQueue, priority: int = 5) -> Holder:
    holder = Holder(queue, priority)
    await asyncio.wait_for(holder.entered.wait(), 5)
    return holder


async def waiting(queue: RedisAdmissionQueue) -> int:
    snap = await queue.snapshot()
    return sum(q.waiting for q in snap.queues)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_capacity_is_never_exceeded(make_queue: MakeQueue) -> None:
    queue = make_queue(default_slots=2)
    await queue.start()
    current = peak = done = 0

    async def work(i: int) -> None:
        nonlocal current, peak, done
        async with queue.admit(B, M, i % 10):
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(0.02)
            current -= 1
        done += 1

    await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(20))), 15)
    assert (peak, done) == (2, 20)
    snap = await queue.snapshot()
    assert [(q.in_use, q.capacity, q.waiting) for q in snap.queues] == [(0, 2, 0)]


async def test_higher_priority_is_admitted_first(make_queue: MakeQueue) -> None:
    queue = make_queue()
    holder = await held(queue)
    order: list[str] = []

    async def want(name: str, priority: int) -> None:
        async with queue.admit(B, M, priority):
            order.append(name)

    low = asyncio.create_task(want("low", 1))
    await until(lambda: _eq(waiting(queue), 1))
    high = asyncio.create_task(want("high", 8))
    await until(lambda: _eq(waiting(queue), 2))
    await holder.release()
    await asyncio.wait_for(asyncio.gather(low, high), 5)
    assert order == ["high", "low"]


async def test_equal_priority_is_first_come_first_served(make_queue: MakeQueue) -> None:
    queue = make_queue()
    holder = await held(queue)
    order: list[int] = []

    async def want(i: int) -> None:
        async with queue.admit(B, M, 4):
            order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(want(i)))
        await until(lambda n=i + 1: _eq(waiting(queue), n))
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [0, 1, 2, 3, 4]


async def test_aging_lets_low_priority_beat_newer_high_priority(make_queue: MakeQueue) -> None:
    # 9 levels * 0.05 s: a priority-0 waiter outranks priority-9 arrivals 0.45 s younger.
    # Arrivals (every 40 ms) outpace service (50 ms each), so without aging the low
    # waiter would only get in after the whole stream.
    queue = make_queue(aging_s=0.05)
    await queue.start()
    holder = await held(queue, 9)
    admitted: list[tuple[str, int]] = []  # (name, arrival index)

    async def want(name: str, priority: int, index: int) -> None:
        async with queue.admit(B, M, priority):
            admitted.append((name, index))
            await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(want("high", 9, 0))]
    await asyncio.sleep(0.02)
    low = asyncio.create_task(want("low", 0, 1))
    await asyncio.sleep(0.02)
    await holder.release()
    for index in range(2, 40):
        tasks.append(asyncio.create_task(want("high", 9, index)))
        await asyncio.sleep(0.04)
    low_done_during_stream = low.done()
    await asyncio.wait_for(asyncio.gather(low, *tasks), 15)
    assert low_done_during_stream, "low priority starved while high priority kept arriving"
    low_at = admitted.index(("low", 1))
    assert any(index > 1 for _, index in admitted[:low_at]), "aging must not skip older highs"
    assert any(index > 1 for _, index in admitted[low_at + 1 :])


async def test_full_queue_raises_queue_full_per_priority(make_queue: MakeQueue) -> None:
    queue = make_queue(max_waiting=2, retry_after_s=7)
    holder = await held(queue)
    waiters = [asyncio.create_task(_admit_once(queue, 5)) for _ in range(2)]
    await until(lambda: _eq(waiting(queue), 2))
    with pytest.raises(QueueFull) as caught:
        async with queue.admit(B, M, 5):
            pass
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "7"
    other = asyncio.create_task(_admit_once(queue, 6))  # its own bound: still accepted
    await until(lambda: _eq(waiting(queue), 3))
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*waiters, other), 5)


async def test_wait_timeout_is_503_and_leaves_the_queue(make_queue: MakeQueue) -> None:
    queue = make_queue(wait_timeout_s=0.3)
    holder = await held(queue)
    with pytest.raises(QueueWaitTimeout) as caught:
        async with queue.admit(B, M, 5):
            pass
    assert caught.value.status == 503 and "within 0.3 s" in str(caught.value.detail)
    assert "Retry-After" in caught.value.headers
    assert await waiting(queue) == 0
    await holder.release()


async def test_both_spellings_of_a_model_share_its_slots(make_queue: MakeQueue) -> None:
    """``llama3.2`` is ``llama3.2:latest`` to Ollama: one slot pool, one queue, not two."""
    queue = make_queue(wait_timeout_s=0.3)
    holder = await held(queue)  # holds the one slot of llama3.2:latest
    with pytest.raises(QueueWaitTimeout):
        async with queue.admit(B, "llama3.2", 5):
            pass
    snap = await queue.snapshot()
    assert [(q.model, q.in_use) for q in snap.queues] == [("llama3.2:latest", 1)]
    await holder.release()
    # a replica from before names were normalized registered the bare name: still one queue
    await queue.calls.redis.sadd(queue.calls.registry_key, f"{B}|llama3.2")
    async with queue.admit(B, "llama3.2", 5):
        snap = await queue.snapshot()
        assert [(q.model, q.in_use) for q in snap.queues] == [("llama3.2:latest", 1)]


async def test_cancel_while_waiting_leaves_the_queue(make_queue: MakeQueue) -> None:
    queue = make_queue()
    holder = await held(queue)
    task = asyncio.create_task(_admit_once(queue, 5))
    await until(lambda: _eq(waiting(queue), 1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: _eq(waiting(queue), 0), 1)
    await holder.release()
    await asyncio.wait_for(_admit_once(queue, 5), 1)


async def test_cancel_or_error_while_holding_releases_the_slot(make_queue: MakeQueue) -> None:
    queue = make_queue()
    holder = await held(queue)
    holder.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder.task
    await asyncio.wait_for(_admit_once(queue, 5), 1)

    with pytest.raises(RuntimeError):
        async with queue.admit(B, M, 5):
            raise RuntimeError("generation failed")
    await asyncio.wait_for(_admit_once(queue, 5), 1)
    snap = await queue.snapshot()
    assert snap.queues[0].in_use == 0


async def test_anyio_cancel_scope_releases_the_slot(make_queue: MakeQueue) -> None:
    # Starlette cancels a disconnected client's handler through an anyio cancel scope,
    # which re-cancels every await inside it: the release must still happen.
    queue = make_queue()
    with anyio.move_on_after(0.1):
        async with queue.admit(B, M, 5):
            await asyncio.sleep(10)
    await asyncio.wait_for(_admit_once(queue, 5), 1)
    with anyio.move_on_after(0.1):  # … and a waiter's place
        async with queue.admit(B, M, 5):
            await _admit_once(queue, 5)
    await until(lambda: _eq(waiting(queue), 0), 1)


async def test_positions_are_reported_down_to_one(make_queue: MakeQueue) -> None:
    queue = make_queue()
    await queue.start()
    holder = await held(queue)
    positions: list[int] = []

    async def record(position: int) -> None:
        positions.append(position)

    first = [asyncio.create_task(_admit_once(queue, 5, hold=0.05)) for _ in range(2)]
    await until(lambda: _eq(waiting(queue), 2))
    last = asyncio.create_task(_admit_once(queue, 5, on_position=record))
    await until(lambda: _eq(waiting(queue), 3))
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*first, last), 5)
    assert positions == [3, 2, 1]


async def test_stale_waiter_of_a_dead_replica_is_dropped(
    make_queue: MakeQueue, redis: Redis
) -> None:
    queue = make_queue()
    keys = QueueKeys(queue.settings.key_prefix, B, M)
    seconds, micros = await redis.time()
    now_us = seconds * 1_000_000 + micros
    # a ghost at the head of the queue whose heartbeat runs out in 0.3 s
    await redis.zadd(keys.wait, {"ghost": 0})  # older than anyone
    await redis.zadd(keys.heartbeats[5], {"ghost": now_us // 1000 + 300})
    positions: list[int] = []

    async def record(position: int) -> None:
        positions.append(position)

    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(_admit_once(queue, 5, on_position=record), 3)
    assert positions == [2]  # the free slot was the ghost's to take until it expired
    assert asyncio.get_running_loop().time() - started >= 0.2
    assert await redis.zcard(keys.wait) == 0


async def test_lease_is_renewed_while_held(make_queue: MakeQueue) -> None:
    queue = make_queue(lease_s=0.3, wait_timeout_s=1.0)
    holder = await held(queue)
    with pytest.raises(QueueWaitTimeout):  # 3+ lease times: only renewal keeps it ours
        await _admit_once(queue, 9)
    await holder.release()


async def test_redis_down_fails_closed() -> None:
    broken = create_redis("redis://127.0.0.1:1/0", timeout_s=0.2)
    queue = RedisAdmissionQueue(broken, QueueSettings())
    with pytest.raises(QueueUnavailable) as caught:
        await _admit_once(queue, 5)
    assert caught.value.status == 503 and "Retry-After" in caught.value.headers
    await broken.aclose()


async def test_invalid_priority_is_refused(make_queue: MakeQueue) -> None:
    with pytest.raises(ValueError, match="priority"):
        await _admit_once(make_queue(), 10)


def test_slot_map_and_per_priority_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_SLOTS", "llama3.2:latest=2, b1|qwen:7b=3 ,*=5")
    monkeypatch.setenv("INFERENCE_QUEUE_MAX_WAITING_BY_PRIORITY", "0=1,9=50")
    settings = QueueSettings()
    assert settings.capacity("b0", "llama3.2:latest") == 2
    assert settings.capacity("b1", "qwen:7b") == 3
    assert settings.capacity("b0", "qwen:7b") == 5
    assert (settings.max_waiting_for(0), settings.max_waiting_for(9)) == (1, 50)
    assert settings.max_waiting_for(5) == settings.max_waiting
    assert QueueSettings(slots={}).capacity("b", "m") == 4


def test_slot_map_names_a_model_in_either_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_SLOTS", "llama3.2=2,b1|qwen=3")
    settings = QueueSettings()
    assert settings.capacity("b0", "llama3.2:latest") == settings.capacity("b0", "llama3.2") == 2
    assert settings.capacity("b1", "qwen:latest") == settings.capacity("b1", "qwen") == 3
    assert QueueKeys("p", "b0", "llama3.2").name == "b0|llama3.2:latest"


async def _admit_once(
    queue: RedisAdmissionQueue, priority: int, *, hold: float = 0.0, on_position: Any = None
) -> None:
    async with queue.admit(B, M, priority, on_position):
        await asyncio.sleep(hold)


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_release_wakes_only_waiters_that_can_be_admitted(make_queue: MakeQueue) -> None:
    # poll fallback far away: every admission below comes from a release wake-up
    queue = make_queue(poll_interval_s=5.0)
    await queue.start()
    polls = 0
    real_poll = queue.calls.poll

    async def counting_poll(*args: Any) -> tuple[int, int]:
        nonlocal polls
        polls += 1
        return await real_poll(*args)

    queue.calls.poll = counting_poll  # type: ignore[method-assign]
    holder = await held(queue)
    order: list[int] = []

    async def one(i: int) -> None:
        async with queue.admit(B, M, 5):  # no on_position: nobody watches its place
            order.append(i)
            await asyncio.sleep(0.01)

    waiters = []
    for i in range(8):
        waiters.append(asyncio.create_task(one(i)))
        await until(lambda n=i + 1: _eq(waiting(queue), n))  # type: ignore[misc]
    await holder.release()
    await asyncio.wait_for(asyncio.gather(*waiters), 4)  # handed on at once, in order
    assert order == list(range(8))
    # every waiter polling on every release message (the herd) made 64 polls here; now
    # only waiters with no more waiters ahead than releases seen poll (32: scripts also
    # publish on each admission, which counts as a release)
    assert polls <= 40, polls
