"""The streamed path's server span end to end (``switchboard_common.server_span``): a real
inference service process, with a simulator and Redis, exporting over OTLP/HTTP to a tiny
sink in this test. The lean server span joins the caller's trace, and the service's lean
child spans (admission, the Ollama call) are its children, exported in the same trace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from switchboard_devtools.process import ManagedProcess
from tests.fixtures.otlp import OtlpSink, otlp_sink
from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import Stack, ident, sse_events, start_inference, start_sim, start_stack

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
STREAM = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi."}], "stream": True}


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with otlp_sink() as state:
        yield state


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer, sink: OtlpSink) -> Stack:
    return start_stack(
        module_spawn,
        redis_server.url(0),
        "sim-server-span",
        INFERENCE_QUEUE_KEY_PREFIX="server-span-test",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
        OTEL_BSP_SCHEDULE_DELAY="50",
    )


def _stream(url: str, trace_id: str, flags: str = "01") -> None:
    headers = {**ident(), "traceparent": f"00-{trace_id}-{CALLER}-{flags}"}
    resp = httpx.post(url + "/inference/chat", json=STREAM, headers=headers, timeout=10)
    assert resp.status_code == 200, resp.text
    assert sse_events(resp.text)[-1][0] == "done"


def _in_trace(
    sink: OtlpSink, trace_id: str, names: set[str], timeout_s: float = 10.0
) -> dict[str, PbSpan]:
    """The trace's spans by name, once every one of ``names`` arrived."""

    def arrived(spans: list[PbSpan]) -> bool:
        return names <= {s.name for s in spans if s.trace_id.hex() == trace_id}

    spans = sink.wait_for(arrived, timeout_s)
    return {s.name: s for s in spans if s.trace_id.hex() == trace_id}


def test_the_server_span_is_the_callers_child_and_the_services_spans_its_children(
    stack: Stack, sink: OtlpSink
) -> None:
    _stream(stack.service.url, TRACE)
    spans = _in_trace(
        sink, TRACE, {"POST /inference/chat", "inference.admission", "POST /api/chat"}
    )
    server = spans["POST /inference/chat"]
    assert server.kind == PbSpan.SPAN_KIND_SERVER
    assert server.parent_span_id.hex() == CALLER
    attributes = {kv.key: kv.value for kv in server.attributes}
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["http.route"].string_value == "/inference/chat"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0  # set on the current span
    assert server.status.code == 0
    for child in ("inference.admission", "POST /api/chat"):
        assert spans[child].parent_span_id == server.span_id, child
        assert spans[child].flags == 0x100, child  # has-is-remote, not remote: a local parent
    admission, call = spans["inference.admission"], spans["POST /api/chat"]
    assert admission.kind == PbSpan.SPAN_KIND_INTERNAL
    assert {kv.key: kv.value for kv in admission.attributes}["inference.priority"].int_value >= 0
    assert server.start_time_unix_nano <= admission.start_time_unix_nano
    assert admission.end_time_unix_nano <= call.start_time_unix_nano <= call.end_time_unix_nano
    assert call.kind == PbSpan.SPAN_KIND_CLIENT and call.status.code == 0
    call_attributes = {kv.key: kv.value for kv in call.attributes}
    assert call_attributes["http.response.status_code"].int_value == 200
    assert call_attributes["url.full"].string_value.endswith("/api/chat")
    with sink.lock:
        services = {
            (scope.scope.name, kv.value.string_value)
            for _, export in sink.exports
            for resource_spans in export.resource_spans
            for scope in resource_spans.scope_spans
            for kv in resource_spans.resource.attributes
            if kv.key == "service.name"
        }
    assert ("switchboard.server", "inference") in services  # the SDK provider's resource


def test_an_unsampled_caller_is_propagated_not_exported(stack: Stack, sink: OtlpSink) -> None:
    unsampled = "11111111111111111111111111111111"
    _stream(stack.service.url, unsampled, flags="00")
    marker = "22222222222222222222222222222222"
    _stream(stack.service.url, marker)  # once its spans are in, the unsampled one's would be
    _in_trace(sink, marker, {"POST /inference/chat", "POST /api/chat"})
    assert not [s for s in sink.spans() if s.trace_id.hex() == unsampled]


def test_spans_queued_at_shutdown_are_flushed(
    spawn: Spawn, redis_server: RedisServer, sink: OtlpSink
) -> None:
    """A normal stop (SIGTERM) exports what the exporters still hold: the lean one's server
    and child spans (uvicorn re-raises SIGTERM, so no ``atexit``)."""
    trace_id = "33333333333333333333333333333333"
    started: list[ManagedProcess] = []

    def keep(*args: Any, **kwargs: Any) -> ManagedProcess:
        started.append(spawn(*args, **kwargs))
        return started[-1]

    sim = start_sim(spawn, "sim-server-span-flush")
    service = start_inference(
        keep,
        [sim.url],
        redis_server.url(0),
        INFERENCE_QUEUE_KEY_PREFIX="server-span-flush-test",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink.url,
        OTEL_BSP_SCHEDULE_DELAY="600000",  # only the exit flush can send them
    )
    _stream(service.url, trace_id)
    time.sleep(0.2)
    assert not [s for s in sink.spans() if s.trace_id.hex() == trace_id]
    (process,) = started
    process.stop()
    names = {"POST /inference/chat", "inference.admission", "POST /api/chat"}
    spans = _in_trace(sink, trace_id, names, timeout_s=1)
    assert spans["POST /inference/chat"].parent_span_id.hex() == CALLER
