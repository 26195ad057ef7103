"""The gateway's proxy span end to end: a real gateway process exporting lean spans
(switchboard_common.lean_trace / span_export) to a tiny OTLP/HTTP sink in this test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from switchboard_devtools.ports import free_port
from tests.fixtures.otlp import OtlpSink, otlp_sink
from tests.fixtures.processes import Spawn, module_argv, spawn_echo, spawn_gateway
from tests.fixtures.redis import RedisServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with otlp_sink() as state:
        yield state


@pytest.fixture(scope="module")
def module_sink() -> Iterator[OtlpSink]:
    with otlp_sink() as state:
        yield state


# --- end to end: gateway process → OTLP sink -----------------------------------------------


@dataclass
class Stack:
    gateway: str
    sink: OtlpSink


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, module_sink: OtlpSink, redis_server: RedisServer) -> Stack:
    upstream = spawn_echo(module_spawn, "lean-echo")
    gateway, _ = spawn_gateway(
        module_spawn,
        {
            "GATEWAY_MEMORY_URL": upstream,
            "GATEWAY_KNOWLEDGE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
            "GATEWAY_PUBLIC_PATHS": "/memory/*,/knowledge/*",
            # every request takes a rate-limit lease from Redis: its commands must not
            # become traces of their own
            "GATEWAY_ANONYMOUS_RATE_LIMIT": "100000/minute",
            "GATEWAY_RATE_LIMIT_LEASE_MAX": "1",
            "GATEWAY_REDIS_URL": redis_server.url(14),
            "GATEWAY_RATE_LIMIT_TIMEOUT_S": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": module_sink.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
        name="lean-gateway",
    )
    return Stack(gateway, module_sink)


def _echoed_traceparent(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    (value,) = [v for k, v in resp.json()["headers"] if k == "traceparent"]
    return str(value)


def _span_by_id(sink: OtlpSink, span_id: str) -> PbSpan:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for span in sink.spans():
            if span.span_id.hex() == span_id:
                return span
        time.sleep(0.02)
    raise AssertionError(f"span {span_id} was not exported")


def test_proxied_request_exports_the_span_the_upstream_sees_as_parent(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        resp = client.get("/memory/echo", headers={"traceparent": f"00-{TRACE}-{CALLER}-01"})
        _, trace_id, parent, flags = _echoed_traceparent(resp).split("-")
        assert (trace_id, flags) == (TRACE, "01")
        span = _span_by_id(stack.sink, parent)
        assert span.trace_id.hex() == TRACE
        assert span.parent_span_id.hex() == CALLER
        assert span.name == "GET /memory"
        assert span.kind == PbSpan.SPAN_KIND_SERVER
        attributes = {kv.key: kv.value for kv in span.attributes}
        assert attributes["http.response.status_code"].int_value == 200
        assert attributes["url.path"].string_value == "/memory/echo"
        assert attributes["peer.service"].string_value == "memory"
        assert span.status.code == 0

        # no caller context: a new trace, rooted at the gateway
        _, trace_id, parent, _ = _echoed_traceparent(client.get("/memory/echo")).split("-")
        root = _span_by_id(stack.sink, parent)
        assert root.trace_id.hex() == trace_id != TRACE
        assert root.parent_span_id == b""


def test_failed_upstream_is_an_error_span_and_the_problem_carries_its_trace(
    stack: Stack,
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        resp = client.get("/knowledge/x", headers={"traceparent": f"00-{trace_id}-{CALLER}-01"})
    assert resp.status_code == 503
    assert resp.json()["trace_id"] == trace_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        spans = [s for s in stack.sink.spans() if s.trace_id.hex() == trace_id]
        if spans:
            break
        time.sleep(0.02)
    (span,) = spans
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert attributes["http.response.status_code"].int_value == 503
    assert span.status.code == 2  # ERROR


def test_unsampled_request_is_propagated_not_exported(stack: Stack) -> None:
    trace_id = "11111111111111111111111111111111"
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        resp = client.get("/memory/echo", headers={"traceparent": f"00-{trace_id}-{CALLER}-00"})
        _, got_trace, parent, flags = _echoed_traceparent(resp).split("-")
        # a sampled request after it: once its span is in, the unsampled one would be too
        marker = _echoed_traceparent(client.get("/memory/echo")).split("-")[2]
    assert (got_trace, flags) == (trace_id, "00") and parent != CALLER
    _span_by_id(stack.sink, marker)
    assert not [s for s in stack.sink.spans() if s.trace_id.hex() == trace_id]


def test_hot_path_redis_commands_make_no_traces(stack: Stack) -> None:
    with httpx.Client(base_url=stack.gateway, timeout=10) as client:
        for _ in range(5):
            marker = _echoed_traceparent(client.get("/memory/echo")).split("-")[2]
    _span_by_id(stack.sink, marker)
    with stack.sink.lock:
        scopes = {
            (scope_spans.scope.name, span.name)
            for _, export in stack.sink.exports
            for resource_spans in export.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        }
        services = {
            kv.value.string_value
            for _, export in stack.sink.exports
            for resource_spans in export.resource_spans
            for kv in resource_spans.resource.attributes
            if kv.key == "service.name"
        }
    assert {scope for scope, _ in scopes} == {"switchboard.gateway.proxy"}, scopes
    assert services == {"gateway"}  # the SDK provider's resource


def test_spans_queued_at_shutdown_are_flushed(spawn: Spawn, sink: OtlpSink) -> None:
    upstream = spawn_echo(spawn, "flush-echo")
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    process = spawn(
        "flush-gateway",
        module_argv("gateway"),
        env={
            "GATEWAY_PORT": str(port),
            "GATEWAY_MEMORY_URL": upstream,
            "GATEWAY_PUBLIC_PATHS": "/memory/*",
            "GATEWAY_ANONYMOUS_RATE_LIMIT": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",  # only the shutdown flush can send them
        },
        ready_url=gateway + "/ready",
    )
    with httpx.Client(base_url=gateway, timeout=10) as client:
        parents = {_echoed_traceparent(client.get("/memory/echo")).split("-")[2] for _ in "abc"}
    time.sleep(0.2)
    assert sink.spans() == []
    process.stop()  # SIGTERM: the lifespan's shutdown exports the queue
    assert {s.span_id.hex() for s in sink.wait_spans(3, timeout_s=1)} == parents


# --- untraced hot-path Redis clients ------------------------------------------------------


def test_untraced_redis_client_bypasses_the_instrumentation(redis_url: str) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from switchboard_common import create_redis

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=provider)

    async def commands(traced: bool) -> list[Any]:
        client = create_redis(redis_url, timeout_s=2, traced=traced)
        try:
            await client.set("k", "v")
            script = client.register_script("return redis.call('GET', KEYS[1])")
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("k")
                pipe.exists("k")
                piped = await pipe.execute()
            return [await client.get("k"), await script(keys=["k"]), piped]
        finally:
            await client.aclose()

    try:
        untraced = asyncio.run(commands(traced=False))
        assert memory.get_finished_spans() == ()
        traced = asyncio.run(commands(traced=True))
        assert len(memory.get_finished_spans()) >= 4  # the instrumentation is really on
    finally:
        instrumentor.uninstrument()
    assert untraced == traced == [b"v", b"v", [b"v", 1]]


# --- the last-resort 500 ------------------------------------------------------------------


@pytest.mark.parametrize("traced", [True, False])
async def test_unexpected_proxy_error_is_a_500_that_quotes_the_trace(
    monkeypatch: pytest.MonkeyPatch, traced: bool
) -> None:
    """A bug on the proxy path: a 500 problem without internals that carries the request
    id and, when the proxy span was open, its trace (the client's, continued)."""
    from gateway.config import Settings
    from gateway.main import create_app

    gateway = create_app(
        Settings(public_paths="/memory/*", trace_proxy=traced, memory_url="http://127.0.0.1:9")
    )

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug with internals: /secret/path")

    monkeypatch.setattr(gateway.http_proxy.exchanger, "exchange", broken)
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        resp = await client.get(
            "/memory/x",
            headers={"traceparent": f"00-{TRACE}-{CALLER}-01", "x-request-id": "bug-1"},
        )
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert problem["request_id"] == "bug-1" == resp.headers["x-request-id"]
    assert "secret" not in resp.text
    if traced:
        assert problem["trace_id"] == TRACE
    else:  # no span was opened: nothing recorded to quote
        assert problem["trace_id"] is None
