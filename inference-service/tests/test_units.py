"""Unit tests: circuit breaker, priority clamping, the admission seam, stream plumbing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from inference_service.services.admission import (
    PositionCallback,
    UnboundedAdmission,
    clamp_priority,
)
from inference_service.services.backends import Backend, BackendPool, CircuitBreaker
from inference_service.services.errors import ModelNotFound, OllamaBadRequest, OllamaUnavailable
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.json_completion import JsonCompleter
from inference_service.services.model_names import normalize_model
from inference_service.services.ollama import OllamaClient, RetryPolicy
from inference_service.services.streaming import prime, with_positions
from inference_service.services.tokens import count_tokens
from switchboard_common import create_http_client
from tests.fixtures.processes import Spawn

from .conftest import SimHandle, start_sim


def test_breaker_opens_half_opens_and_closes() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=0.05)
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    time.sleep(0.06)
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # exactly one probe
    breaker.failure()
    assert breaker.state == "open"
    time.sleep(0.06)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_probe_never_settled_lapses() -> None:
    # claimed by a request the queue then refused (or whose client left): after another
    # cooldown the backend gets a new probe instead of staying half-open for good
    breaker = CircuitBreaker(threshold=1, cooldown_s=0.05)
    breaker.failure()
    time.sleep(0.06)
    assert breaker.allow() and not breaker.allow()
    time.sleep(0.06)
    assert breaker.state == "half-open" and breaker.allow() and not breaker.allow()
    breaker.failure()  # the late outcome of a probe still opens it
    assert breaker.state == "open"


async def test_a_probe_talking_to_the_backend_does_not_lapse() -> None:
    """A probe that reached the backend (a long stream) stays the only one until settled;
    its outcome then decides."""
    breaker = CircuitBreaker(threshold=1, cooldown_s=0.05)
    backend = Backend(object(), breaker)  # type: ignore[arg-type]
    pool = BackendPool([backend], refresh_s=60)
    breaker.failure()
    time.sleep(0.06)
    assert breaker.allow()
    async with pool.use(backend):  # the probe streams for longer than a cooldown
        time.sleep(0.12)
        assert breaker.state == "half-open" and not breaker.allow()
    assert breaker.state == "closed" and breaker.allow()


def test_picking_early_never_claims_the_probe() -> None:
    """``pick_now`` (the early admission's pick, which its caller may not use) leaves a
    half-open backend's probe to the request that will use it."""
    breaker = CircuitBreaker(threshold=1, cooldown_s=0.05)
    backend = Backend(object(), breaker)  # type: ignore[arg-type]
    backend.models, backend.known = [{"name": "m:latest"}], frozenset({"m:latest"})
    backend.fetched_at = time.monotonic()
    pool = BackendPool([backend], refresh_s=60)
    assert pool.pick_now("m") is backend  # closed: picked
    breaker.failure()
    time.sleep(0.06)
    assert breaker.state == "half-open"
    assert pool.pick_now("m") is None and not breaker.probing
    assert breaker.allow()  # the probe is still there for the real pick


async def test_a_stream_begun_early_is_the_probe_of_a_half_open_backend() -> None:
    """``begin`` then a gate that cannot enter early (no lean Redis client, no idle
    connection): the stream itself is the probe, succeeds and closes the breaker (it was
    a 503 "cooling down" while ``begin`` took the probe)."""

    class Stub:
        base_url = "http://b1"

        def prepare_stream(self, kind: str, body: dict[str, Any]) -> Any:
            async def chunks() -> AsyncIterator[dict[str, Any]]:
                yield {"message": {"content": "ok"}, "done": False}

            return chunks

    class Ledger:
        async def record(self, *args: Any) -> None:
            pass

    breaker = CircuitBreaker(threshold=1, cooldown_s=0.05)
    backend = Backend(Stub(), breaker)  # type: ignore[arg-type]
    backend.models, backend.known = [{"name": "m:latest"}], frozenset({"m:latest"})
    pool = BackendPool([backend], refresh_s=60)
    service = InferenceService(pool, UnboundedAdmission(), Ledger(), 10_000)  # type: ignore[arg-type]
    breaker.failure()
    time.sleep(0.06)
    backend.fetched_at = time.monotonic()  # a fresh model list: begin() gets as far as a pick
    gen = Generation("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "u")
    service.begin(gen)
    try:
        chunks = [chunk async for chunk in service.stream(gen)]
    finally:
        service.end(gen)
    assert chunks == [{"message": {"content": "ok"}, "done": False}]
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 5), ("", 5), ("x", 5), (-4, 0), ("12", 9), (3, 3), ("7", 7)],
)
def test_clamp_priority(raw: int | str | None, expected: int) -> None:
    assert clamp_priority(raw) == expected


def test_normalize_model() -> None:
    assert normalize_model("llama3.2") == "llama3.2:latest"
    assert normalize_model("qwen2.5-coder:1.5b") == "qwen2.5-coder:1.5b"
    assert normalize_model("registry.io:5000/ns/m") == "registry.io:5000/ns/m:latest"


async def test_with_positions_interleaves_queue_events() -> None:
    def start(on_position: PositionCallback) -> AsyncIterator[dict[str, Any]]:
        async def chunks() -> AsyncIterator[dict[str, Any]]:
            await on_position(2)
            await on_position(1)
            yield {"response": "hi", "done": False}
            yield {"response": "", "done": True}

        return chunks()

    events = [e async for e in with_positions(start)]
    assert [name for name, _ in events] == ["queued", "queued", "chunk", "chunk"]
    assert events[0][1] == {"position": 2}


async def test_prime_raises_before_the_response_starts() -> None:
    async def failing() -> AsyncIterator[int]:
        raise ModelNotFound("x", ["y"])
        yield 1  # pragma: no cover

    with pytest.raises(ModelNotFound):
        await prime(failing())

    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    assert [i async for i in await prime(numbers())] == [0, 1, 2]


class RecordingGate:
    """An AdmissionGate that records its calls and reports a queue position once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def admit(
        self,
        backend: str,
        model: str,
        priority: int,
        on_position: PositionCallback | None,
        entry: object = None,
    ) -> AbstractAsyncContextManager[None]:
        self.calls.append((backend, model, priority))

        @asynccontextmanager
        async def held() -> AsyncIterator[None]:
            if on_position is not None:
                await on_position(1)
            yield

        return held()

    def enter(self, backend: str, model: str, priority: int) -> None:
        return None

    def abandon(self, entry: object) -> None:
        raise AssertionError("enter() gave no entry")


class MemoryLedger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, int, int]] = []

    async def record(self, user: str, model: str, prompt: int, completion: int) -> None:
        self.records.append((user, model, prompt, completion))


@pytest.fixture(scope="module")
def unit_sim(module_spawn: Spawn) -> SimHandle:
    return start_sim(module_spawn, "sim-units")


@pytest.fixture
def gate_and_service(unit_sim: SimHandle) -> tuple[RecordingGate, MemoryLedger, Any]:
    gate, ledger = RecordingGate(), MemoryLedger()

    def build() -> InferenceService:
        http = create_http_client(unit_sim.url)
        backend = Backend(OllamaClient(http, RetryPolicy(retries=0)), CircuitBreaker(3, 1))
        pool = BackendPool([backend], refresh_s=30)
        return InferenceService(pool, gate, ledger, max_prompt_bytes=10_000)  # type: ignore[arg-type]

    return gate, ledger, build


async def test_every_generation_goes_through_the_gate(
    gate_and_service: tuple[RecordingGate, MemoryLedger, Any], unit_sim: SimHandle
) -> None:
    gate, ledger, build = gate_and_service
    service: InferenceService = build()
    chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    await service.complete(Generation("chat", chat, "u1", priority=7))
    events = [
        e
        async for e in with_positions(
            lambda cb: service.stream(Generation("chat", chat, "u1", 2), cb)
        )
    ]
    assert events[0] == ("queued", {"position": 1})
    await service.embed("u1", {"model": "nomic-embed-text", "input": "a b"}, priority=0)
    # counting tokens runs the prompt on the backend: it waits for a slot too
    counted = await count_tokens(service.pool, gate, "llama3.2", "a b c", None, 4)  # type: ignore[arg-type]
    assert counted[1] is True
    assert gate.calls == [
        (unit_sim.url, "llama3.2", 7),
        (unit_sim.url, "llama3.2", 2),
        (unit_sim.url, "nomic-embed-text", 0),
        (unit_sim.url, "llama3.2", 4),
    ]
    assert ledger.records == [
        ("u1", "llama3.2", 1, 24),
        ("u1", "llama3.2", 1, 24),
        ("u1", "nomic-embed-text", 2, 0),
    ]


async def test_json_completer_is_a_review_backend(
    gate_and_service: tuple[RecordingGate, MemoryLedger, Any],
) -> None:
    _, ledger, build = gate_and_service
    completer = JsonCompleter(build)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    text = await completer.complete_json("llama3.2", "You review code.", "x = 1", schema)
    assert text.startswith("{") and '"ok"' in text
    assert ledger.records[0][0] == "service:code-analysis"


async def test_a_code_review_is_charged_to_its_caller_at_its_priority(
    gate_and_service: tuple[RecordingGate, MemoryLedger, Any],
) -> None:
    """The code route binds the service's completer to the caller: the review waits in the
    queue at the caller's priority and its tokens land in the caller's ledger."""
    import httpx

    from inference_service.config import Settings
    from inference_service.routes.code import router as code_router
    from switchboard_common import create_service_app
    from switchboard_common.identity import (
        IDENTITY_HEADER,
        SIGNATURE_HEADER,
        Principal,
        sign_identity,
    )

    gate, ledger, build = gate_and_service
    settings = Settings()
    app = create_service_app(settings, title="t", routers=[code_router])
    app.state.review_backend = JsonCompleter(build)
    principal = Principal(sub="caller-1", username="c", scope=["inference"])
    value, signature = sign_identity(principal, settings.internal_secret)
    headers = {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature, "X-Priority": "3"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
        resp = await client.post(
            "/code/analyze", json={"code": "def f():\n    return 1\n"}, headers=headers
        )
    assert resp.status_code == 200, resp.text
    assert ledger.records and {r[0] for r in ledger.records} == {"caller-1"}
    assert gate.calls and {c[2] for c in gate.calls} == {3}


def test_no_route_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain ``def`` dependency or endpoint in a worker thread; on the
    streaming path those hops cost milliseconds of time to first token under load
    (docs/queue.md#latency), so every one of the service's own must be ``async def``."""
    import inspect

    from fastapi.routing import APIRoute

    from inference_service.config import Settings
    from inference_service.main import create_app

    def calls(dependant: Any) -> Iterator[Any]:
        yield dependant.call
        for sub in dependant.dependencies:
            yield from calls(sub)

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            elif (included := getattr(route, "original_router", None)) is not None:
                yield from api_routes(included.routes)  # an included router

    prefixes = ("/inference", "/v1", "/api", "/code")
    routes = list(api_routes(create_app(Settings()).routes))
    sync = {
        f"{route.path}: {call.__qualname__}"
        for route in routes
        if route.path.startswith(prefixes)
        for call in calls(route.dependant)
        if inspect.isfunction(call) and not inspect.iscoroutinefunction(call)
    }
    assert len(routes) > 20
    assert not sync


@pytest.mark.parametrize(
    ("url", "lean"),
    [
        ("http://127.0.0.1:11434", True),
        ("http://ollama.internal:11434/", True),
        ("http://proxy.internal/ollama", False),  # a path prefix: httpx applies it
        ("http://user:secret@ollama.internal:11434", False),  # credentials: httpx sends them
        ("https://ollama.example.com", False),  # TLS: httpx
    ],
)
def test_streams_use_the_lean_client_only_where_it_reaches_the_same_url(
    url: str, lean: bool
) -> None:
    client = OllamaClient(create_http_client(url))
    assert (client.lean is not None) is lean
    client.close()


# --- non-streamed generations over the lean client ---------------------------------------


@pytest.fixture
def lean_only(unit_sim: SimHandle) -> Iterator[OllamaClient]:
    """An OllamaClient whose httpx client fails if used: every call below must go over the
    lean client."""
    client = OllamaClient(create_http_client(unit_sim.url), RetryPolicy(retries=2, base_s=0.01))

    async def unused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("went through httpx")

    client.http.send = unused  # type: ignore[method-assign]
    unit_sim.reset()
    yield client
    client.close()
    unit_sim.reset()


async def test_non_streamed_generations_take_the_lean_client(lean_only: OllamaClient) -> None:
    chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
    answer = await lean_only.chat({**chat, "options": {"num_predict": 4}})
    assert answer["done"] is True and answer["message"]["role"] == "assistant"
    assert answer["eval_count"] == 4
    generated = await lean_only.generate({"model": "llama3.2", "prompt": "hi", "stream": True})
    assert generated["done"] is True and generated["response"]  # "stream" forced off
    embedded = await lean_only.embed({"model": "nomic-embed-text", "input": ["a b", "c"]})
    assert len(embedded["embeddings"]) == 2


async def test_lean_non_streamed_errors_translate_as_before(
    lean_only: OllamaClient, unit_sim: SimHandle
) -> None:
    with pytest.raises(ModelNotFound):
        await lean_only.chat({"model": "no-such-model", "messages": []})
    unit_sim.config(fail_mode="error_500", fail_count=2)  # retried before the answer
    answer = await lean_only.generate({"model": "llama3.2", "prompt": "hi"})
    assert answer["done"] is True
    unit_sim.config(fail_mode="error_500", fail_count=-1)
    with pytest.raises(OllamaUnavailable):
        await lean_only.generate({"model": "llama3.2", "prompt": "hi"})
    unit_sim.config(fail_mode="none")
    with pytest.raises(OllamaBadRequest):
        await lean_only.chat({"model": "llama3.2", "messages": "not a list"})


async def test_a_cancelled_non_streamed_call_cancels_the_generation(
    lean_only: OllamaClient, unit_sim: SimHandle
) -> None:
    unit_sim.config(token_delay_ms=50)
    call = asyncio.create_task(
        lean_only.chat(
            {
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "options": {"num_predict": 40},
            }
        )
    )
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    deadline = time.monotonic() + 3
    while unit_sim.stats()["cancelled"] != 1:
        assert time.monotonic() < deadline, unit_sim.stats()
        await asyncio.sleep(0.02)
