"""``server_span``: a lean SERVER span made current for a raw-ASGI request — the caller's
context in, SDK child spans and log lines in its trace, the response status on it, and the
process's lean exporter (checked against a tiny OTLP/HTTP sink). End to end through a real
inference service: inference-service/tests/test_server_span_export.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Message, Scope

from switchboard_common import server_span as server_span_module
from switchboard_common.lean_trace import (
    KIND_CLIENT,
    KIND_INTERNAL,
    KIND_SERVER,
    LeanSpan,
    LeanTracer,
    Sampler,
)
from switchboard_common.request_context import current_trace_id
from switchboard_common.server_span import (
    ProcessTracer,
    _CurrentSpan,
    propagation_headers,
    server_span,
    start_child_span,
)
from tests.fixtures.otlp import otlp_sink

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
ROUTE = "/inference/chat"


@pytest.fixture
def ended(monkeypatch: pytest.MonkeyPatch) -> list[LeanSpan]:
    """The spans ``server_span`` ends, instead of the process's exporter."""
    spans: list[LeanSpan] = []
    monkeypatch.setattr(server_span_module._process, "tracer", LeanTracer(Sampler(), spans.append))
    return spans


@pytest.fixture
def sdk_spans() -> Iterator[InMemorySpanExporter]:
    """Finished SDK spans of this process (an SDK provider is installed if none is)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another provider is installed"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def _scope(*headers: tuple[str, str], method: str = "POST") -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": ROUTE,
        "scheme": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }


async def _discard(message: Message) -> None:
    pass


def test_the_callers_traceparent_makes_it_a_child_in_the_callers_trace(
    ended: list[LeanSpan],
) -> None:
    scope = _scope(("traceparent", f"00-{TRACE}-{CALLER}-01"), ("tracestate", "k=v"))
    with server_span(scope, ROUTE, _discard):
        inside = trace.get_current_span().get_span_context()
        assert current_trace_id() == TRACE
    (span,) = ended
    assert (span.trace_id_hex(), span.parent_span_id) == (TRACE, int(CALLER, 16))
    assert inside.span_id == span.span_id != int(CALLER, 16)
    assert not inside.is_remote and inside.trace_flags.sampled
    assert inside.trace_state.to_header() == span.trace_state == "k=v"
    assert (span.name, span.kind) == (f"POST {ROUTE}", KIND_SERVER)
    assert span.attributes == {
        "http.request.method": "POST",
        "http.route": ROUTE,
        "url.path": ROUTE,
        "url.scheme": "http",
    }
    assert span.end_ns >= span.start_ns > 0
    assert current_trace_id() is None  # detached once the request is over


@pytest.mark.parametrize("header", ["garbage", f"00-{TRACE}-{'0' * 16}-01"])
def test_an_invalid_traceparent_starts_a_new_trace(ended: list[LeanSpan], header: str) -> None:
    with server_span(_scope(("traceparent", header)), ROUTE, _discard):
        trace_id = current_trace_id()
    (span,) = ended
    assert trace_id == span.trace_id_hex() != TRACE
    assert span.parent_span_id == 0


def test_sdk_spans_inside_are_its_children_and_see_its_attributes(
    ended: list[LeanSpan], sdk_spans: InMemorySpanExporter
) -> None:
    scope = _scope(("traceparent", f"00-{TRACE}-{CALLER}-01"), ("baggage", "tenant=acme"))
    with server_span(scope, ROUTE, _discard):
        with trace.get_tracer("test").start_as_current_span("inference.admission"):
            pass
        trace.get_tracer("test").start_span("POST /api/chat", kind=SpanKind.CLIENT).end()
        # what the usage ledger does with the current span
        trace.get_current_span().set_attribute("gen_ai.usage.output_tokens", 7)
        trace.get_current_span().set_attributes({"tags": ["a", "b"], "dropped": None})  # type: ignore[dict-item]
        assert baggage.get_baggage("tenant") == "acme"
    (span,) = ended
    children = {s.name: s for s in sdk_spans.get_finished_spans()}
    for name in ("inference.admission", "POST /api/chat"):
        child = children[name]
        assert child.context is not None and child.parent is not None
        assert child.context.trace_id == span.trace_id
        assert child.parent.span_id == span.span_id and not child.parent.is_remote
    assert span.attributes["gen_ai.usage.output_tokens"] == 7
    assert span.attributes["tags"] == ("a", "b") and "dropped" not in span.attributes
    _CurrentSpan(span).set_attribute("late", 1)  # ended: maybe being encoded, left alone
    assert "late" not in span.attributes


def test_an_unsampled_caller_propagates_but_records_nothing(
    ended: list[LeanSpan], sdk_spans: InMemorySpanExporter
) -> None:
    with server_span(_scope(("traceparent", f"00-{TRACE}-{CALLER}-00")), ROUTE, _discard):
        inside = trace.get_current_span().get_span_context()
        trace.get_tracer("test").start_span("child").end()
    assert ended == []
    assert inside.trace_id == int(TRACE, 16) and not inside.trace_flags.sampled
    assert sdk_spans.get_finished_spans() == ()  # the SDK's parent-based sampler agrees


@pytest.mark.parametrize(("status", "error"), [(200, False), (404, False), (503, True)])
async def test_the_response_status_is_recorded_once_the_request_ends(
    ended: list[LeanSpan], status: int, error: bool
) -> None:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with server_span(_scope(), ROUTE, send) as traced_send:
        await traced_send({"type": "http.response.start", "status": status, "headers": []})
        assert ended == []  # recorded at the end, not on the first event's way out
        await traced_send({"type": "http.response.body", "body": b"", "more_body": False})
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    (span,) = ended
    assert span.attributes["http.response.status_code"] == status
    assert (span.status_code == StatusCode.ERROR.value) is error


def test_an_escaping_exception_is_an_error_and_the_context_is_restored(
    ended: list[LeanSpan],
) -> None:
    with pytest.raises(RuntimeError), server_span(_scope(), ROUTE, _discard):
        raise RuntimeError("backend exploded")
    (span,) = ended
    assert (span.status_code, span.status_message) == (
        StatusCode.ERROR.value,
        "RuntimeError: backend exploded",
    )
    assert current_trace_id() is None


def test_start_ns_is_the_spans_start(ended: list[LeanSpan]) -> None:
    with server_span(_scope(), ROUTE, _discard, start_ns=1_000):
        pass
    (span,) = ended
    assert span.start_ns == 1_000 and span.end_ns > 1_000


def test_the_process_exporter_sends_sampled_spans_with_the_providers_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made on the first span, only with an endpoint; what is queued goes at shutdown."""
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    quiet = ProcessTracer()
    quiet.get().start_span("GET /x", None, None, {}).end()
    assert quiet.exporter is None and quiet.tracer is not None and quiet.tracer.sink is None

    with otlp_sink() as sink:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # only shutdown sends
        process = ProcessTracer()
        assert process.exporter is None  # lazily: nothing before the first span
        span = process.get().start_span("GET /x", f"00-{TRACE}-{CALLER}-01", None, {})
        span.end()
        assert process.exporter is not None
        process.shutdown()
        (exported,) = sink.wait_spans(1)
        with sink.lock:
            (_, export) = sink.exports[0]
    assert exported.span_id == span.span_id.to_bytes(8, "big")
    assert exported.kind == PbSpan.SPAN_KIND_SERVER
    (resource_spans,) = export.resource_spans
    assert resource_spans.scope_spans[0].scope.name == "switchboard.server"
    resource = {kv.key for kv in resource_spans.resource.attributes}
    assert {"service.name", "telemetry.sdk.name"} <= resource
    assert process.tracer is None  # the next span would make a new exporter


# --- start_child_span: lean children of the current span ---------------------------------


def test_a_child_of_the_lean_server_span_is_in_its_trace_and_sends_its_own_ids(
    ended: list[LeanSpan],
) -> None:
    template = {"server.port": 11434}
    scope = _scope(("traceparent", f"00-{TRACE}-{CALLER}-01"), ("tracestate", "k=v"))
    scope["headers"].append((b"baggage", b"tenant=acme"))
    with server_span(scope, ROUTE, _discard):
        child = start_child_span("POST /api/chat", template, kind=KIND_CLIENT)
        child.set_attribute("http.response.status_code", 200)
        headers = propagation_headers(child)
        child.end()
    client, server = ended
    assert client is child and server.name == f"POST {ROUTE}"
    assert (client.trace_id, client.parent_span_id) == (server.trace_id, server.span_id)
    assert client.kind == KIND_CLIENT and not client.parent_remote and client.sampled
    assert client.trace_state == "k=v" and template == {"server.port": 11434}  # copied
    assert headers == {
        "traceparent": f"00-{TRACE}-{client.span_id:016x}-01",
        "tracestate": "k=v",
        "baggage": "tenant=acme",
    }


def test_a_child_of_an_sdk_span_or_a_remote_one_takes_its_context(
    ended: list[LeanSpan], sdk_spans: InMemorySpanExporter
) -> None:
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        child = start_child_span("inference.admission", {"inference.priority": 5})
        child.end()
    ids = caller.get_span_context()
    assert (child.trace_id, child.parent_span_id) == (ids.trace_id, ids.span_id)
    assert child.kind == KIND_INTERNAL and not child.parent_remote and ended == [child]
    remote = propagate.extract({"traceparent": f"00-{TRACE}-{CALLER}-01"})
    from_remote = start_child_span("inference.admission", {}, context=remote)
    assert (from_remote.trace_id_hex(), from_remote.parent_span_id) == (TRACE, int(CALLER, 16))
    assert from_remote.parent_remote  # encoded with the is-remote flag, as the SDK would


def test_an_unsampled_parents_child_records_nothing_but_propagates(
    ended: list[LeanSpan],
) -> None:
    with server_span(_scope(("traceparent", f"00-{TRACE}-{CALLER}-00")), ROUTE, _discard):
        child = start_child_span("POST /api/chat", {}, kind=KIND_CLIENT)
        headers = propagation_headers(child)
        assert not child.is_recording()
        child.end()
    assert ended == []
    assert child.trace_id_hex() == TRACE
    assert headers == {"traceparent": f"00-{TRACE}-{child.span_id:016x}-00"}


def test_without_a_parent_a_child_starts_a_trace_sampled_per_the_sampler(
    ended: list[LeanSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = start_child_span("inference.admission", {})
    root.end()
    assert root.parent_span_id == 0 and root.sampled and ended == [root]
    monkeypatch.setattr(
        server_span_module._process, "tracer", LeanTracer(Sampler("always_off"), ended.append)
    )
    unsampled = start_child_span("inference.admission", {})
    unsampled.end()
    assert not unsampled.sampled and ended == [root]
    assert unsampled.trace_id != root.trace_id


def test_explicit_start_and_end_times_are_the_spans(ended: list[LeanSpan]) -> None:
    span = start_child_span("inference.admission", {}, start_ns=1_000)
    span.end(5_000)
    span.end(9_000)  # ended once
    assert (span.start_ns, span.end_ns) == (1_000, 5_000) and ended == [span]
