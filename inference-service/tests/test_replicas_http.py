"""The admission queue's promises, over HTTP, with real processes: one simulator (8 parallel
generations, 20 ms per token, so generations overlap), one Redis, and inference-service
replicas sharing its queue with 2 slots per backend+model.

* ``a``, ``b``: the pair under test (priority 1 may have only one waiter: a tiny bound);
* ``impatient``: a third replica whose waiters give up after 1 s;
* ``victim``: a fourth with a 1.5 s lease, SIGKILLed by the lease-recovery test.

All of them start together (the imports are most of a replica's start-up) and are stopped
by ``module_spawn``. Before each test the queue must be idle and the simulator is reset, so
its ``max_active_seen`` is the test's own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess
from tests.fixtures.processes import Spawn, module_argv
from tests.fixtures.redis import RedisServer

from .conftest import SECRET, SimHandle, assert_problem, ident, sse_events  # type: ignore[import-not-found]

pytestmark = pytest.mark.timeout(60)

SLOTS = 2
TOKEN_DELAY_MS = 20
RETRY_AFTER_S = 3  # not the default (5): the header must carry the configured value
IMPATIENT_WAIT_S = 1.0
VICTIM_LEASE_S = 1.5
NAMES = ("llama3.2", "llama3.2:latest")  # one Ollama model: no tag means ':latest'
TIMEOUT = httpx.Timeout(20.0)


@dataclass
class Replica:
    name: str
    url: str
    process: ManagedProcess


@dataclass
class Cluster:
    sim: SimHandle
    replicas: dict[str, Replica] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.replicas[name].url


@pytest.fixture(scope="module")
def cluster(module_spawn: Spawn, redis_server: RedisServer) -> Cluster:
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    flags = ["--num-parallel", "8", "--token-delay-ms", str(TOKEN_DELAY_MS)]
    sim_proc = module_spawn(
        "sim-replicas", module_argv("ollama_sim", "--port", str(sim_port), *flags)
    )
    shared = {
        "INFERENCE_OLLAMA_URLS": sim_url,
        "INFERENCE_REDIS_URL": redis_server.url(0),
        "INFERENCE_ENVIRONMENT": "test",
        "INFERENCE_LOG_LEVEL": "warning",
        "INFERENCE_GATEWAY_URL": "",  # no token-budget reports to a gateway that is not there
        "SWITCHBOARD_INTERNAL_SECRET": SECRET,
        "INFERENCE_QUEUE_KEY_PREFIX": f"replicas-http-{uuid.uuid4().hex[:8]}",
        "INFERENCE_QUEUE_DEFAULT_SLOTS": str(SLOTS),
        "INFERENCE_QUEUE_MAX_WAITING_BY_PRIORITY": "1=1",
        "INFERENCE_QUEUE_RETRY_AFTER_S": str(RETRY_AFTER_S),
        "INFERENCE_QUEUE_WAIT_TIMEOUT_S": "20",
        "INFERENCE_QUEUE_LEASE_S": "6",
    }
    extra = {
        "a": {},
        "b": {},
        "impatient": {"INFERENCE_QUEUE_WAIT_TIMEOUT_S": str(IMPATIENT_WAIT_S)},
        "victim": {"INFERENCE_QUEUE_LEASE_S": str(VICTIM_LEASE_S)},
    }
    cluster = Cluster(SimHandle(sim_url))
    for name, env in extra.items():
        port = free_port()
        proc = module_spawn(
            f"inference-{name}",
            module_argv("inference_service"),
            env={**shared, **env, "INFERENCE_PORT": str(port)},
        )
        cluster.replicas[name] = Replica(name, f"http://127.0.0.1:{port}", proc)
    sim_proc.wait_http(sim_url + "/", 30)
    for replica in cluster.replicas.values():
        replica.process.wait_http(replica.url + "/health", 45)
    return cluster


def queue_snapshot(url: str) -> list[dict[str, Any]]:
    resp = httpx.get(url + "/inference/queue", headers=ident(), timeout=5)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["queues"])


def totals(queues: list[dict[str, Any]]) -> tuple[int, int]:
    """Slots in use and requests waiting, over every lane of the queue."""
    return sum(q["in_use"] for q in queues), sum(q["waiting"] for q in queues)


def wait_until(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} within {within_s} s")
        time.sleep(0.03)


@pytest.fixture
def sim(cluster: Cluster) -> SimHandle:
    """The simulator, reset once the queue is idle and no generation runs any more."""
    url = cluster["a"]

    wait_until(lambda: totals(queue_snapshot(url)) == (0, 0), 10, "queue idle before the test")
    cluster.sim.wait_stats(lambda s: s["active"] == 0, within_s=5)
    cluster.sim.reset()
    return cluster.sim


def chat(
    model: str = "llama3.2", *, tokens: int, stream: bool, priority: int = 5
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "stream": stream,
        "priority": priority,
        "options": {"num_predict": tokens},
    }


@dataclass
class Sse:
    """A streamed reply read event by event: ``(event, data, monotonic time)``."""

    response: httpx.Response
    events: list[tuple[str, Any, float]] = field(default_factory=list)
    _lines: AsyncIterator[str] | None = None

    async def next(self) -> tuple[str, Any]:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        name, data = "message", ""
        async for line in self._lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif line == "" and data:
                value = json.loads(data)
                self.events.append((name, value, time.monotonic()))
                return name, value
        raise AssertionError(f"stream ended after {[e[:2] for e in self.events]}")

    async def until(self, event: str) -> tuple[str, Any]:
        while (got := await self.next())[0] != event:
            assert got[0] in ("queued", "token"), f"unexpected {got} before {event!r}"
        return got

    async def rest(self) -> list[tuple[str, Any]]:
        """Every event up to the terminal ``done`` / ``error``."""
        while (await self.next())[0] not in ("done", "error"):
            pass
        return [e[:2] for e in self.events]

    def first_token_at(self) -> float:
        return next(t for e, _, t in self.events if e == "token")


async def open_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Sse:
    request = client.build_request("POST", url + "/inference/chat", json=body, headers=ident())
    response = await client.send(request, stream=True)
    assert response.status_code == 200, (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    return Sse(response)


def assert_complete(events: list[tuple[str, Any]], tokens: int) -> None:
    names = [e for e, _ in events]
    assert names[-2:] == ["usage", "done"], events[-3:]
    assert names.count("token") == tokens, names
    first_token = names.index("token")
    assert set(names[:first_token]) <= {"queued"}, names[:first_token]


# --- 1. shared capacity ------------------------------------------------------------------


async def test_two_replicas_never_exceed_the_backend_slots(
    cluster: Cluster, sim: SimHandle
) -> None:
    """12 overlapping chats, streamed and not, over both replicas and both spellings of one
    model: Ollama never sees more than SLOTS of them at once, and every one is served."""
    tokens = 10  # ~0.2 s each: six rounds on two slots, three if the spellings split the slots
    plan = [
        (replica, name, stream)
        for k, (replica, name) in enumerate((r, n) for r in ("a", "b") for n in NAMES)
        for stream in ((True, False, True) if k % 2 == 0 else (False, True, False))
    ]
    assert len(plan) == 12 and sum(n == NAMES[0] for _, n, _ in plan) == 6

    async def one(client: httpx.AsyncClient, replica: str, name: str, stream: bool) -> None:
        url = cluster[replica] + "/inference/chat"
        resp = await client.post(
            url, json=chat(name, tokens=tokens, stream=stream), headers=ident()
        )
        what = f"{replica} {name} stream={stream}"
        assert resp.status_code == 200, f"{what}: {resp.status_code} {resp.text[:300]}"
        if stream:
            assert_complete(sse_events(resp.text), tokens)
        else:
            assert resp.json()["usage"]["completion_tokens"] == tokens, what

    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        await asyncio.wait_for(asyncio.gather(*(one(client, *p) for p in plan)), timeout=30)
    stats = sim.stats()
    lanes = [(q["model"], q["capacity"]) for q in queue_snapshot(cluster["a"])]
    assert stats["requests"].get("/api/chat") == 12, stats
    assert stats["max_active_seen"] <= SLOTS, (
        f"Ollama saw {stats['max_active_seen']} generations at once with {SLOTS} slots; "
        f"queue lanes: {lanes}"
    )
    assert stats["max_active_seen"] == SLOTS, stats  # the slots were contended for real


# --- 2. full queue -------------------------------------------------------------------------


async def test_a_full_priority_is_503_with_retry_after(cluster: Cluster, sim: SimHandle) -> None:
    """Priority 1 may have one waiter: with the slots held and one waiting, the next
    priority-1 request on either replica, streamed or not, is refused at once with a 503
    problem and Retry-After; a priority-5 request is still queued and served."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        holders = [await open_stream(client, cluster["a"], chat(tokens=150, stream=True))]
        holders.append(await open_stream(client, cluster["a"], chat(tokens=150, stream=True)))
        for h in holders:
            await h.until("token")
        waiter = await open_stream(client, cluster["b"], chat(tokens=5, stream=True, priority=1))
        assert await waiter.next() == ("queued", {"position": 1})

        for replica, stream in (("a", False), ("b", True)):
            started = time.monotonic()
            resp = await client.post(
                cluster[replica] + "/inference/chat",
                json=chat(tokens=5, stream=stream, priority=1),
                headers=ident(),
            )
            refused_in = time.monotonic() - started
            problem = assert_problem(resp, 503)
            assert problem["type"] == "urn:switchboard:problem:queue-full", problem
            assert resp.headers.get("retry-after") == str(RETRY_AFTER_S), resp.headers
            assert refused_in < 1.0, f"refused after {refused_in:.2f} s, not at once"

        # another priority has its own bound: this one waits (and outranks the waiter)
        urgent = asyncio.create_task(
            client.post(
                cluster["b"] + "/inference/chat", json=chat(tokens=5, stream=False), headers=ident()
            )
        )
        await asyncio.to_thread(
            wait_until,
            lambda: totals(queue_snapshot(cluster["a"]))[1] == 2,
            5,
            "the priority-5 request queued beside the priority-1 waiter",
        )
        for h in holders:  # leaving frees both slots
            await h.response.aclose()
        assert (await asyncio.wait_for(urgent, 10)).status_code == 200
        assert_complete(await asyncio.wait_for(waiter.rest(), 10), 5)
        await waiter.response.aclose()
    # the two refused requests never reached Ollama
    assert sim.requests("/api/chat") == 4


# --- 3. wait timeout -------------------------------------------------------------------------


async def test_a_wait_past_the_timeout_is_503_with_retry_after(
    cluster: Cluster, sim: SimHandle
) -> None:
    """Slots held through replica a; a request waiting on the impatient replica gives up
    after its wait timeout: a 503 problem with Retry-After, or (streamed, once its
    ``queued`` event has opened the stream) a terminal ``error`` event with that problem."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        holders = [await open_stream(client, cluster["a"], chat(tokens=200, stream=True))]
        holders.append(await open_stream(client, cluster["a"], chat(tokens=200, stream=True)))
        for h in holders:
            await h.until("token")
        url = cluster["impatient"]

        async def whole() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            resp = await client.post(
                url + "/inference/chat", json=chat(tokens=5, stream=False), headers=ident()
            )
            return resp, time.monotonic() - started

        async def streamed() -> tuple[list[tuple[str, Any]], float]:
            started = time.monotonic()
            sse = await open_stream(client, url, chat(tokens=5, stream=True))
            try:
                return await sse.rest(), time.monotonic() - started
            finally:
                await sse.response.aclose()

        (resp, waited), (events, waited_streamed) = await asyncio.wait_for(
            asyncio.gather(whole(), streamed()), timeout=10
        )
        for h in holders:
            await h.response.aclose()

    problem = assert_problem(resp, 503)
    assert problem["type"] == "urn:switchboard:problem:queue-timeout", problem
    assert resp.headers.get("retry-after") == str(RETRY_AFTER_S), resp.headers
    # given up at the timeout: not at once, and not when a holder finished (4 s)
    assert IMPATIENT_WAIT_S - 0.05 <= waited < IMPATIENT_WAIT_S + 1.0, waited

    assert events[0][0] == "queued", events
    assert [e for e, _ in events][-1] == "error", events
    assert "token" not in [e for e, _ in events], events
    error = events[-1][1]
    assert error["status"] == 503 and error["type"].endswith(":queue-timeout"), error
    assert error["retry_after"] == RETRY_AFTER_S, error  # the header it could not send
    assert IMPATIENT_WAIT_S - 0.05 <= waited_streamed < IMPATIENT_WAIT_S + 1.0, waited_streamed
    assert sim.requests("/api/chat") == 2  # the holders only


# --- 4. lease recovery ---------------------------------------------------------------------


async def test_a_killed_replicas_slots_come_back_after_its_lease(
    cluster: Cluster, sim: SimHandle
) -> None:
    """The victim holds both slots mid-generation and is SIGKILLed: the requests waiting on
    replica a are served within the victim's lease (plus slack), never above the slots."""
    victim = cluster.replicas["victim"]
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        held = [await open_stream(client, victim.url, chat(tokens=300, stream=True))]
        held.append(await open_stream(client, victim.url, chat(tokens=300, stream=True)))
        for h in held:
            await h.until("token")
        waiting = await open_stream(client, cluster["a"], chat(tokens=10, stream=True))
        assert await waiting.next() == ("queued", {"position": 1})
        whole = asyncio.create_task(
            client.post(
                cluster["a"] + "/inference/chat",
                json=chat(tokens=10, stream=False),
                headers=ident(),
            )
        )
        await asyncio.to_thread(
            wait_until,
            lambda: totals(queue_snapshot(cluster["a"])) == (2, 2),
            5,
            "both slots held by the victim and two requests waiting",
        )

        victim.process.kill()  # SIGKILL: no release, its leases just stop being renewed
        killed_at = time.monotonic()
        for h in held:
            with pytest.raises(httpx.HTTPError):
                await asyncio.wait_for(h.rest(), 5)
            await h.response.aclose()
        events = await asyncio.wait_for(waiting.rest(), VICTIM_LEASE_S + 5)
        await waiting.response.aclose()
        served_after = waiting.first_token_at() - killed_at
        resp = await asyncio.wait_for(whole, 10)

    assert_complete(events, 10)
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 10, resp.text
    assert served_after < VICTIM_LEASE_S + 1.5, f"slot came back {served_after:.2f} s after kill"
    assert sim.stats()["max_active_seen"] <= SLOTS, sim.stats()


# --- 5. queue positions on a stream --------------------------------------------------------


async def test_a_waiting_stream_reports_its_positions_before_tokens(
    cluster: Cluster, sim: SimHandle
) -> None:
    """Slots held via replica a (finishing at ~0.4 s and ~1.2 s); a stream on b waits first
    in line, a stream on a second: their ``queued`` events come before any token, and the
    second's position falls 2 → 1 as the first is admitted; first come, first served."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        short = await open_stream(client, cluster["a"], chat(tokens=20, stream=True))
        long = await open_stream(client, cluster["a"], chat(tokens=60, stream=True))
        for h in (short, long):
            await h.until("token")
        first = await open_stream(client, cluster["b"], chat(tokens=30, stream=True))
        assert await first.next() == ("queued", {"position": 1})
        second = await open_stream(client, cluster["a"], chat(tokens=10, stream=True))
        assert await second.next() == ("queued", {"position": 2})
        results = await asyncio.wait_for(
            asyncio.gather(*(s.rest() for s in (short, long, first, second))), timeout=15
        )
        for s in (short, long, first, second):
            await s.response.aclose()

    *_, first_events, second_events = results
    assert_complete(first_events, 30)
    assert_complete(second_events, 10)
    assert [d for e, d in first_events if e == "queued"] == [{"position": 1}]
    assert [d for e, d in second_events if e == "queued"] == [{"position": 2}, {"position": 1}]
    assert first.first_token_at() < second.first_token_at()
    assert sim.stats()["max_active_seen"] <= SLOTS
