"""The admission call sent ahead (``RedisAdmissionQueue.enter``, ``InferenceService.begin``):
the streaming path asks Redis for its slot before its remaining CPU work and waits for the
answer later. It must be the same admission as asking in line — one slot held while the
generation runs, given back after it, never leaked by a request that fails in between —
and the call must really be on the wire before the caller yields to the event loop.

Real Redis (lean client) and a real simulator process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from inference_service.services.backends import Backend, BackendPool, CircuitBreaker
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.ollama import OllamaClient, RetryPolicy
from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_lane import QueueEntry
from inference_service.services.queue_models import QueueKeys, QueueSettings
from switchboard_common import create_http_client
from switchboard_common.lean_redis import LeanRedis
from tests.fixtures.processes import Spawn

from .conftest import SimHandle, start_sim

MODEL = "llama3.2:latest"
PREFIX = "early-admission-test"


@pytest.fixture
async def queue(redis: Redis, redis_url: str) -> AsyncIterator[RedisAdmissionQueue]:
    lean = LeanRedis(redis_url)
    settings = QueueSettings(default_slots=1, key_prefix=PREFIX, poll_interval_s=0.05)
    queue = RedisAdmissionQueue(redis, settings, lean=lean)
    await queue.start()
    yield queue
    await queue.aclose()
    lean.close()


def _holders(redis_url: str, backend: str, model: str) -> list[bytes]:
    """The slot holders, read by a blocking client: no event loop turn is given away."""
    client = sync_redis.Redis.from_url(redis_url)
    try:
        return list(client.zrange(QueueKeys(PREFIX, backend, model).holders, 0, -1))
    finally:
        client.close()


async def _warm(queue: RedisAdmissionQueue, backend: str, model: str) -> None:
    """One admission in line: the lane is registered and a lean connection is idle."""
    async with queue.admit(backend, model, 5):
        pass


async def test_the_call_is_on_the_wire_before_the_loop_turns(
    queue: RedisAdmissionQueue, redis_url: str
) -> None:
    assert queue.enter("b1", MODEL, 5) is None  # first use of the lane: admit() registers it
    await _warm(queue, "b1", MODEL)
    entry = queue.enter("b1", MODEL, 5)
    assert isinstance(entry, QueueEntry)
    deadline = time.monotonic() + 2
    holders: list[bytes] = []
    while not holders and time.monotonic() < deadline:  # no await: Redis got it already
        time.sleep(0.01)
        holders = _holders(redis_url, "b1", MODEL)
    assert holders == [entry.holder_id.encode()]
    async with queue.admit("b1", MODEL, 5, entry=entry):
        assert _holders(redis_url, "b1", MODEL) == [entry.holder_id.encode()]  # held once
    await asyncio.sleep(0.05)
    assert _holders(redis_url, "b1", MODEL) == []


async def test_an_entry_never_taken_gives_its_slot_back(
    queue: RedisAdmissionQueue, redis_url: str
) -> None:
    await _warm(queue, "b2", MODEL)
    entry = queue.enter("b2", MODEL, 5)
    assert entry is not None
    queue.abandon(entry)
    deadline = time.monotonic() + 2
    while _holders(redis_url, "b2", MODEL) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _holders(redis_url, "b2", MODEL) == []
    async with asyncio.timeout(2):  # the one slot is free for the next request
        async with queue.admit("b2", MODEL, 5):
            pass


async def test_a_second_entry_waits_its_turn_like_a_second_request(
    queue: RedisAdmissionQueue, redis_url: str
) -> None:
    await _warm(queue, "b3", MODEL)
    positions: list[int] = []

    async def position(n: int) -> None:
        positions.append(n)

    first = queue.enter("b3", MODEL, 5)
    assert first is not None
    async with queue.admit("b3", MODEL, 5, entry=first):
        second = queue.enter("b3", MODEL, 5)  # one slot: this one is queued
        assert second is not None
        waiting = asyncio.ensure_future(_hold(queue.admit("b3", MODEL, 5, position, second)))
        await asyncio.sleep(0.2)
        assert not waiting.done() and positions == [1]
    async with asyncio.timeout(2):
        await waiting  # admitted once the first left
    await asyncio.sleep(0.05)
    assert _holders(redis_url, "b3", MODEL) == []


async def _hold(admission: object) -> None:
    async with admission:  # type: ignore[attr-defined]
        pass


@pytest.fixture(scope="module")
def early_sim(module_spawn: Spawn) -> SimHandle:
    return start_sim(module_spawn, "sim-early-admission")


@pytest.fixture
async def service(
    early_sim: SimHandle, queue: RedisAdmissionQueue
) -> AsyncIterator[InferenceService]:
    http = create_http_client(early_sim.url)
    backend = Backend(OllamaClient(http, RetryPolicy(retries=0)), CircuitBreaker(3, 1))
    pool = BackendPool([backend], refresh_s=30)
    yield InferenceService(pool, queue, None, max_prompt_bytes=10_000)  # type: ignore[arg-type]
    await http.aclose()


def _gen(**options: object) -> Generation:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if options:
        body["options"] = options
    return Generation("chat", body, "early-user")


class _NoLedger:
    async def record(self, *args: object) -> None:
        return None


async def test_a_stream_uses_the_entry_begin_made_and_ends_with_no_slot_held(
    service: InferenceService, redis_url: str
) -> None:
    service.ledger = _NoLedger()  # type: ignore[assignment]
    backend = service.pool.backends[0].name
    await service.pool.pick(MODEL)  # the model lists are fresh: begin() can pick at once
    await _warm(service.admission, backend, MODEL)  # type: ignore[arg-type]
    gen = _gen()
    service.begin(gen)
    assert gen.early is not None and gen.early.backend.name == backend
    chunks = [c async for c in service.stream(gen)]
    assert chunks[-1]["done"] and gen.early is None  # taken by the stream
    service.end(gen)  # nothing left to give back
    await asyncio.sleep(0.05)
    assert _holders(redis_url, backend, MODEL) == []


async def test_what_begin_leaves_to_the_stream(service: InferenceService) -> None:
    await service.pool.pick(MODEL)
    backend = service.pool.backends[0].name
    await _warm(service.admission, backend, MODEL)  # type: ignore[arg-type]
    with_num_ctx = _gen(num_ctx=512)  # the context length check needs an await
    service.begin(with_num_ctx)
    assert with_num_ctx.early is None
    unknown = Generation("chat", {**_gen().body, "model": "no-such-model"}, "early-user")
    service.begin(unknown)  # stream() reports the 404
    assert unknown.early is None
    service.max_prompt_bytes = 1  # stream() answers the 413
    too_big = _gen()
    service.begin(too_big)
    assert too_big.early is None


async def test_a_stream_that_fails_before_its_slot_gives_the_entry_back(
    service: InferenceService, redis_url: str
) -> None:
    backend = service.pool.backends[0].name
    await service.pool.pick(MODEL)
    await _warm(service.admission, backend, MODEL)  # type: ignore[arg-type]
    gen = _gen()
    service.begin(gen)
    assert gen.early is not None
    service.end(gen)  # e.g. the client left before the stream started
    deadline = time.monotonic() + 2
    while _holders(redis_url, backend, MODEL) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _holders(redis_url, backend, MODEL) == []
