"""The streaming hot path's overlaps (docs/inference.md#the-streaming-path): the Ollama
request is encoded while the admission call is in flight, and the admission's bookkeeping
(span, metrics, lease renewer) runs once the Ollama request is on the wire. Each must be
equal in effect to doing the work in line: same request bytes, a slot held once and kept
alive, spans with the true intervals, nothing sent to Ollama before the slot.

Real Redis (lean client), a real simulator process, and real sockets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from inference_service.core.deferred import Deferred
from inference_service.services.backends import Backend, BackendPool, CircuitBreaker
from inference_service.services.errors import OllamaError
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.ollama import OllamaClient, RetryPolicy
from inference_service.services.ollama_stream import LeanNdjsonClient
from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_lane import AdmissionSpan
from inference_service.services.queue_models import QueueSettings
from inference_service.services.usage import UsageLedger, today, usage_key
from switchboard_common import create_http_client
from switchboard_common import server_span as server_span_module
from switchboard_common.lean_redis import LeanRedis
from switchboard_common.lean_trace import KIND_CLIENT, LeanSpan, LeanTracer, Sampler
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn

from .conftest import SimHandle, start_sim

MODEL = "llama3.2:latest"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "héllo"}], "options": {"seed": 1}}


# --- Deferred ------------------------------------------------------------------------------


async def test_deferred_runs_once_on_the_next_turn_or_when_first_needed() -> None:
    calls: list[str] = []
    later = Deferred(lambda: calls.append("later"))
    assert calls == [] and not later.done  # nothing runs in line
    await asyncio.sleep(0)
    assert calls == ["later"] and later.done

    def needed_now() -> int:
        calls.append("needed")
        return 7

    needed = Deferred(needed_now)
    assert needed.result() == 7  # run at once: the scheduled turn must not run it again
    await asyncio.sleep(0)
    later.flush()
    assert calls == ["later", "needed"]


async def test_deferred_errors_surface_in_the_task_that_needs_the_result() -> None:
    def fail() -> int:
        raise ValueError("boom")

    failing = Deferred(fail)
    await asyncio.sleep(0)  # raised on the loop's turn: kept, not sent to the loop's handler
    with pytest.raises(ValueError, match="boom"):
        failing.result()


# --- the Ollama request, built ahead ---------------------------------------------------------


async def _capture_one_request() -> tuple[int, asyncio.Future[bytes]]:
    """A one-shot HTTP server: records the request, answers one NDJSON line."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        got.set_result(head + await reader.readexactly(length))
        line = b'{"model":"m","done":true}\n'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(line), line)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got.add_done_callback(lambda _: server.close())
    return port, got


async def test_the_prepared_request_is_byte_for_byte_the_one_step_request(
    spans: list[LeanSpan],
) -> None:
    """``prepare`` then ``send`` writes exactly what ``stream`` wrote before the split
    (request line, host, traceparent, content-type, accept, content-length, body)."""
    body = b'{"model":"llama3.2:latest","messages":[{"role":"user","content":"h\\u00e9llo"}],'
    body += b'"options":{"seed":1},"stream":true}'
    for two_steps in (False, True):
        port, got = await _capture_one_request()
        client = LeanNdjsonClient(
            "127.0.0.1", port, connect_timeout_s=2, read_timeout_s=5, retries=0, backoff=(0, 0, 0)
        )
        chunks = (
            client.send(client.prepare("/api/chat", CHAT))
            if two_steps
            else client.stream("/api/chat", CHAT)
        )
        assert [c async for c in chunks] == [{"model": "m", "done": True}]
        client.close()
        request = await asyncio.wait_for(got, 5)
        span = spans[-1]
        assert (span.name, span.kind) == ("POST /api/chat", KIND_CLIENT)
        traceparent = f"00-{span.trace_id:032x}-{span.span_id:016x}-01"  # the client span's
        assert request == (
            b"POST /api/chat HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ntraceparent: %s\r\n"
            b"content-type: application/json\r\naccept: application/x-ndjson\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, traceparent.encode(), len(body), body)
        )


async def test_a_failed_call_is_an_error_on_its_client_span(spans: list[LeanSpan]) -> None:
    """A 404 answer (→ ModelNotFound) and a backend that refuses connections (→
    OllamaUnavailable): the span has the status code if any, ERROR and ``error.type``."""

    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"error":"model not found"}'
        writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(not_found, "127.0.0.1", 0)
    dead = free_port()  # nothing listens
    answered = server.sockets[0].getsockname()[1]
    for port, error, status in [(answered, "ModelNotFound", 404), (dead, "OllamaUnavailable", 0)]:
        client = LeanNdjsonClient(
            "127.0.0.1", port, connect_timeout_s=2, read_timeout_s=5, retries=0, backoff=(0, 0, 0)
        )
        with pytest.raises(OllamaError) as raised:
            [c async for c in client.stream("/api/chat", CHAT)]
        client.close()
        span = spans[-1]
        assert (span.name, span.status_code) == ("POST /api/chat", 2)
        assert span.attributes["error.type"] == type(raised.value).__name__ == error
        assert span.status_message == str(raised.value)[:200]
        assert span.attributes.get("http.response.status_code", 0) == status
    server.close()
    assert len(spans) == 2


def test_the_admission_span_records_an_error_and_its_explicit_interval(
    spans: list[LeanSpan],
) -> None:
    span = AdmissionSpan("http://ollama:11434", MODEL, 3, started=1_000)
    span.ended = 2_000
    span.close(RuntimeError("redis went away"))
    AdmissionSpan("b", MODEL, 3).close(asyncio.CancelledError())  # a cancellation: no error
    failed, cancelled = spans
    assert (failed.name, failed.start_ns, failed.end_ns) == ("inference.admission", 1_000, 2_000)
    assert failed.attributes == {
        "inference.backend": "http://ollama:11434",
        "gen_ai.request.model": MODEL,
        "inference.priority": 3,
    }
    assert (failed.status_code, failed.status_message) == (2, "RuntimeError: redis went away")
    assert cancelled.status_code == 0 and cancelled.end_ns >= cancelled.start_ns > 0


# --- the admission: bookkeeping after the write -----------------------------------------------


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> list[LeanSpan]:
    """The lean spans this process ends (admission, the Ollama call), instead of the process
    exporter's; an SDK provider is installed if none is, for the caller's span."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    assert isinstance(trace.get_tracer_provider(), TracerProvider), "another provider"
    ended: list[LeanSpan] = []
    monkeypatch.setattr(server_span_module._process, "tracer", LeanTracer(Sampler(), ended.append))
    return ended


@pytest.fixture
async def queue(redis: Redis, redis_url: str) -> AsyncIterator[RedisAdmissionQueue]:
    """One slot per model, a short lease; Lua calls over the lean client, as in the service."""
    lean = LeanRedis(redis_url)
    settings = QueueSettings(default_slots=1, lease_s=0.3, poll_interval_s=0.05)
    queue = RedisAdmissionQueue(redis, settings, lean=lean)
    await queue.start()
    yield queue
    await queue.aclose()
    lean.close()


def _gauge(queue: RedisAdmissionQueue, name: str, backend: str) -> float:
    family = queue.metrics.holding if name == "holding" else queue.metrics.waiting
    return float(family.labels(backend)._value.get())


async def test_a_late_started_renewer_keeps_the_lease_and_the_slot_is_held_once(
    queue: RedisAdmissionQueue,
) -> None:
    """The renewer starts after the caller's first await (not in line), yet a holder that
    keeps its slot for several lease times keeps it alone."""
    backend = "b-renew"
    order: list[str] = []

    async def hold(name: str, seconds: float) -> None:
        async with queue.admit(backend, MODEL, 5):
            order.append(f"{name} in")
            await asyncio.sleep(seconds)
            order.append(f"{name} out")

    first = asyncio.create_task(hold("a", 1.0))  # > 3 leases of 0.3 s
    await asyncio.sleep(0.1)
    await asyncio.wait_for(asyncio.gather(first, hold("b", 0)), 10)
    assert order == ["a in", "a out", "b in", "b out"]
    assert _gauge(queue, "holding", backend) == 0 and _gauge(queue, "waiting", backend) == 0


async def test_leaving_before_the_deferred_bookkeeping_ran_releases_everything(
    queue: RedisAdmissionQueue,
) -> None:
    """A block that fails before its first await: the bookkeeping runs in the exit instead,
    the gauges pair up, no renewer is left behind and the slot is free at once."""
    backend = "b-early"
    admitted = queue.metrics.admitted.labels(backend, "5")
    before = admitted._value.get()
    with pytest.raises(RuntimeError):
        async with queue.admit(backend, MODEL, 5):
            raise RuntimeError("failed in line")
    await asyncio.sleep(0)
    assert not queue._renewers
    assert admitted._value.get() == before + 1
    assert _gauge(queue, "holding", backend) == 0 and _gauge(queue, "waiting", backend) == 0
    async with asyncio.timeout(1):  # the only slot is free (no lease to wait out)
        async with queue.admit(backend, MODEL, 5):
            pass


# --- through InferenceService: the spans and the order on the wire -----------------------------


@pytest.fixture(scope="module")
def hot_sim(module_spawn: Spawn) -> SimHandle:
    return start_sim(module_spawn, "sim-hot-path")


def _one(spans: Sequence[LeanSpan], name: str) -> LeanSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_spans_keep_their_intervals_and_nothing_reaches_ollama_before_the_slot(
    queue: RedisAdmissionQueue, hot_sim: SimHandle, spans: list[LeanSpan]
) -> None:
    """Queued behind a holder: the admission span covers the wait (from before the enqueue
    to the grant), the Ollama client span starts after it and covers only the HTTP call,
    both are children of the caller's span, and Ollama saw no request while queued."""
    hot_sim.reset()
    http = create_http_client(hot_sim.url)
    backend = Backend(OllamaClient(http, RetryPolicy(retries=0)), CircuitBreaker(3, 1))

    class NoLedger:
        async def record(self, user: str, model: str, prompt: int, completion: int) -> None:
            return None

    service = InferenceService(BackendPool([backend], 30), queue, NoLedger(), 10_000)  # type: ignore[arg-type]
    gen = Generation("chat", dict(CHAT), "u1", 5)
    positions: list[int] = []

    async def on_position(position: int) -> None:
        positions.append(position)

    release = asyncio.Event()

    async def holder() -> None:
        async with queue.admit(backend.name, MODEL, 5):
            await release.wait()

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    spans.clear()
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        chunks = service.stream(gen, on_position)
        first = asyncio.create_task(anext(chunks))  # type: ignore[arg-type]
        while not positions:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert hot_sim.requests("/api/chat") == 0  # queued: nothing sent to Ollama
        release.set()
        await asyncio.wait_for(first, 5)
        rest = [c async for c in chunks]
    await holding
    await http.aclose()
    backend.client.close()
    assert positions == [1] and rest[-1]["done"]
    assert hot_sim.requests("/api/chat") == 1
    admission, call = _one(spans, "inference.admission"), _one(spans, "POST /api/chat")
    assert admission.start_ns and admission.end_ns and call.start_ns and call.end_ns
    assert admission.end_ns - admission.start_ns >= 0.3e9  # the wait is in the span
    assert call.start_ns >= admission.end_ns  # the client span has no queue wait in it
    ids = caller.get_span_context()
    for child in (admission, call):
        assert (child.trace_id, child.parent_span_id) == (ids.trace_id, ids.span_id)
        assert child.sampled and not child.parent_remote
    assert admission.attributes["inference.priority"] == 5
    assert call.kind == KIND_CLIENT and call.attributes["http.response.status_code"] == 200
    assert call.status_code == admission.status_code == 0


async def test_backend_has_reads_the_fetched_list_and_forgets_it_on_a_failed_fetch(
    hot_sim: SimHandle,
) -> None:
    """``has`` is a set lookup now; it must still follow the last fetch: a model present,
    tags normalised (``llama3.2`` is ``llama3.2:latest``), nothing after a failed fetch
    (while ``had`` remembers)."""
    http = create_http_client(hot_sim.url)
    dead = create_http_client(f"http://127.0.0.1:{free_port()}")  # nothing listens
    backend = Backend(OllamaClient(http, RetryPolicy(retries=0)), CircuitBreaker(3, 1))
    pool = BackendPool([backend], 30)
    try:
        assert not backend.has(MODEL)
        await pool.refresh(backend, force=True)
        assert backend.has("llama3.2") and backend.has(MODEL) and not backend.has("nope:1b")
        backend.client = OllamaClient(dead, RetryPolicy(retries=0))  # the backend goes away
        await pool.refresh(backend, force=True)
        assert not backend.has(MODEL) and backend.had(MODEL)
    finally:
        await http.aclose()
        await dead.aclose()


async def test_the_ledger_writes_the_same_counts_over_either_client(
    redis: Redis, redis_url: str
) -> None:
    """One generation's counts: the lean client's Lua call and redis-py's pipeline leave the
    same hash, cached hits counted apart, with the retention as its expiry."""
    lean = LeanRedis(redis_url)
    try:
        for user, ledger in (
            ("lean", UsageLedger(redis, retention_days=2, lean=lean)),
            ("pipe", UsageLedger(redis, retention_days=2)),
        ):
            await ledger.record(user, "llama3.2", 5, 7)  # both spellings: one model, one row
            await ledger.add(user, "llama3.2:latest", 1, 2, cached=True)
            await ledger.record(user, "qwen", 3, 0)
        lean_key, pipe_key = usage_key("lean", today()), usage_key("pipe", today())
        assert (
            await redis.hgetall(lean_key)
            == await redis.hgetall(pipe_key)
            == {
                b"llama3.2:latest|prompt": b"6",
                b"llama3.2:latest|completion": b"9",
                b"llama3.2:latest|requests": b"2",
                b"llama3.2:latest|cached_requests": b"1",
                b"qwen:latest|prompt": b"3",
                b"qwen:latest|completion": b"0",
                b"qwen:latest|requests": b"1",
            }
        )
        for key in (lean_key, pipe_key):
            assert 2 * 86400 - 5 < await redis.ttl(key) <= 2 * 86400
        # a row written under the bare name (before names were normalized) adds up with it
        await redis.hincrby(lean_key, "llama3.2|completion", 10)
        report = await UsageLedger(redis).report("lean", 1)
        assert report["totals"]["llama3.2:latest"]["completion_tokens"] == 19
        assert set(report["totals"]) == {"llama3.2:latest", "qwen:latest"}
    finally:
        lean.close()
