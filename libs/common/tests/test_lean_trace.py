"""The lean span and its OTLP exporter (lean_trace.py, otlp_encode.py, span_export.py),
checked against the official protobuf classes and the SDK; the exporter posts to a tiny
OTLP/HTTP sink in this test. End to end through real processes: the gateway's proxy span
(gateway/tests/test_proxy_tracing.py) and a service's server span (test_server_span.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from switchboard_common.lean_trace import (
    KIND_CLIENT,
    LeanSpan,
    LeanTracer,
    RemoteParent,
    Sampler,
    parse_traceparent,
)
from switchboard_common.otlp_encode import SpanEncoder
from switchboard_common.span_export import (
    SPANS_DROPPED,
    BatchConfig,
    OtlpTarget,
    SpanExporter,
)
from switchboard_devtools.ports import free_port
from tests.fixtures.otlp import OtlpSink, otlp_sink

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
RESOURCE: dict[str, Any] = {
    "service.name": "gateway",
    "service.version": "1.2.3",
    "host.cores": 2,
    "sampled.ratio": 0.5,
    "debug": True,
    "tags": ["a", "b"],
}


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with otlp_sink() as state:
        yield state


# --- encoding ----------------------------------------------------------------------------


def _spans() -> list[LeanSpan]:
    ended: list[LeanSpan] = []
    tracer = LeanTracer(Sampler("always_on"), ended.append)
    child = tracer.start_span(
        "POST /memory",
        f"00-{TRACE}-{CALLER}-01",
        "vendor=abc, other=x:y",
        {"http.request.method": "POST", "url.path": "/memory/items", "peer.service": "memory"},
    )
    child.set_attribute("http.response.status_code", 503)
    child.set_attribute("retry.ratio", 0.25)
    child.set_attribute("cache.hit", False)
    child.set_attribute("negative", -7)
    child.set_status(Status(StatusCode.ERROR, "upstream refused"))
    child.end()
    root = tracer.start_span("GET /inference", None, None, {"url.path": "/inference/ping"})
    root.set_attribute("http.response.status_code", 200)
    root.end()
    ok = tracer.start_span("GET /auth", None, None, {})
    ok.set_status(StatusCode.OK, "ignored unless an error")
    ok.end()
    return ended


def _local_children() -> list[LeanSpan]:
    """A root and its children in this process (``start_child_span``): CLIENT, INTERNAL."""
    ended: list[LeanSpan] = []
    tracer = LeanTracer(Sampler("always_on"), ended.append)
    root = tracer.start_span("POST /inference/chat", None, None, {})
    local = RemoteParent(root.trace_id, root.span_id, True, "k=v")
    client = tracer.start_child("POST /api/chat", local, {"server.port": 11434}, KIND_CLIENT)
    client.end()
    internal = tracer.start_child("inference.admission", local, {"inference.priority": 5})
    internal.start_ns = 1_000
    internal.end(2_000)
    root.end()
    return ended


def _decode(payload: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(payload)


def test_every_field_decodes_with_the_official_protobuf_classes() -> None:
    spans = _spans()
    export = _decode(SpanEncoder(RESOURCE, "switchboard.gateway.proxy", "9.9").request(spans))

    (resource_spans,) = export.resource_spans
    decoded_resource = {
        kv.key: kv.value.WhichOneof("value") for kv in resource_spans.resource.attributes
    }
    assert decoded_resource == {
        "service.name": "string_value",
        "service.version": "string_value",
        "host.cores": "int_value",
        "sampled.ratio": "double_value",
        "debug": "bool_value",
        "tags": "array_value",
    }
    values = {kv.key: kv.value for kv in resource_spans.resource.attributes}
    assert values["host.cores"].int_value == 2
    assert values["sampled.ratio"].double_value == 0.5
    assert values["debug"].bool_value is True
    assert [v.string_value for v in values["tags"].array_value.values] == ["a", "b"]
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == (
        "switchboard.gateway.proxy",
        "9.9",
    )
    child, root, ok = scope_spans.spans
    source = spans[0]
    assert child.trace_id == bytes.fromhex(TRACE)
    assert child.span_id == source.span_id.to_bytes(8, "big")
    assert child.parent_span_id == bytes.fromhex(CALLER)
    assert child.trace_state == "vendor=abc,other=x:y"
    assert child.name == "POST /memory"
    assert child.kind == PbSpan.SPAN_KIND_SERVER
    assert child.start_time_unix_nano == source.start_ns
    assert child.end_time_unix_nano == source.end_ns >= source.start_ns
    attributes = {kv.key: kv.value for kv in child.attributes}
    assert attributes["http.request.method"].string_value == "POST"
    assert attributes["url.path"].string_value == "/memory/items"
    assert attributes["peer.service"].string_value == "memory"
    assert attributes["http.response.status_code"].int_value == 503
    assert attributes["retry.ratio"].double_value == 0.25
    assert attributes["cache.hit"].WhichOneof("value") == "bool_value"
    assert attributes["cache.hit"].bool_value is False
    assert attributes["negative"].int_value == -7
    assert (child.status.code, child.status.message) == (2, "upstream refused")
    assert child.flags == 0x300  # has-is-remote | is-remote: the parent came from a caller

    assert root.parent_span_id == b""
    assert root.trace_state == ""
    assert root.trace_id == spans[1].trace_id.to_bytes(16, "big")
    assert root.HasField("status") and root.status.code == 0
    assert root.flags == 0x100
    assert (ok.status.code, ok.status.message) == (1, "")


def test_local_children_have_their_kind_and_a_local_parent() -> None:
    export = _decode(SpanEncoder(RESOURCE, "s").request(_local_children()))
    client, internal, root = export.resource_spans[0].scope_spans[0].spans
    for local in (client, internal):
        assert (local.trace_id, local.parent_span_id) == (root.trace_id, root.span_id)
        assert local.trace_state == "k=v"  # the parent's
        assert local.flags == 0x100  # has-is-remote only: the parent is in this process
    assert (root.kind, root.flags) == (PbSpan.SPAN_KIND_SERVER, 0x100)
    assert client.kind == PbSpan.SPAN_KIND_CLIENT  # proto numbers: CLIENT=3
    assert internal.kind == PbSpan.SPAN_KIND_INTERNAL  # INTERNAL=1
    assert (internal.start_time_unix_nano, internal.end_time_unix_nano) == (1_000, 2_000)


@pytest.mark.parametrize("make", [_spans, _local_children])
def test_bytes_equal_what_the_sdk_exporter_would_send(make: Callable[[], list[LeanSpan]]) -> None:
    """The same spans as SDK ``ReadableSpan``s, through the SDK's own OTLP encoder."""
    spans = make()
    resource = Resource(RESOURCE)
    scope = InstrumentationScope("switchboard.gateway.proxy", "9.9")
    sdk_spans = []
    for span in spans:
        parent = None
        if span.parent_span_id:
            parent = SpanContext(span.trace_id, span.parent_span_id, span.parent_remote)
        state = TraceState([tuple(m.split("=", 1)) for m in span.trace_state.split(",") if m])
        code = StatusCode(span.status_code)
        sdk_spans.append(
            ReadableSpan(
                span.name,
                SpanContext(span.trace_id, span.span_id, False, TraceFlags(1), trace_state=state),
                parent=parent,
                resource=resource,
                attributes=dict(span.attributes),
                kind=SpanKind(span.kind - 1),  # the API enum is the proto's - 1
                status=Status(code, span.status_message or None),
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=scope,
            )
        )
    expected = encode_spans(sdk_spans)
    ours = _decode(SpanEncoder(RESOURCE, "switchboard.gateway.proxy", "9.9").request(spans))
    assert ours == expected


# --- trace context and sampling ------------------------------------------------------------


def test_caller_context_makes_a_child_in_the_same_trace() -> None:
    ended: list[LeanSpan] = []
    span = LeanTracer(Sampler(), ended.append).start_span(
        "GET /x", f"00-{TRACE}-{CALLER}-01", "k=v", {}
    )
    version, trace_id, span_id, flags = span.traceparent().split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert span_id != CALLER and span.parent_span_id == int(CALLER, 16)
    assert span.trace_id_hex() == TRACE
    span.end()
    span.end()  # twice: recorded once
    assert ended == [span]


def test_unsampled_caller_is_not_recorded_but_still_propagated() -> None:
    ended: list[LeanSpan] = []
    span = LeanTracer(Sampler(), ended.append).start_span(
        "GET /x", f"00-{TRACE}-{CALLER}-00", None, {}
    )
    _, trace_id, span_id, flags = span.traceparent().split("-")
    assert (trace_id, flags) == (TRACE, "00")
    assert span_id != CALLER  # a span id of its own, like the SDK's non-recording span
    assert not span.is_recording()
    span.end()
    assert ended == []


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"00-{'0' * 32}-{CALLER}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE}-{CALLER}-01",  # forbidden version
        f"00-{TRACE}-{CALLER}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE.upper()}-{CALLER}-01",  # hex is lowercase
        f"00-{TRACE}-{CALLER}-1",
    ],
)
def test_invalid_traceparent_starts_a_new_trace(header: str) -> None:
    span = LeanTracer(Sampler(), None).start_span("GET /x", header, "k=v", {})
    assert span.trace_id_hex() != TRACE
    assert span.parent_span_id == 0 and span.trace_state == ""
    assert span.sampled


def test_future_versions_and_padding_are_accepted() -> None:
    future = parse_traceparent(f"cc-{TRACE}-{CALLER}-03-what-comes-next", None)
    assert future is not None and future.sampled  # 0x03 & 0x01
    padded = parse_traceparent(f"  00-{TRACE}-{CALLER}-00 ", " a=1 ,, b=2 ")
    assert padded is not None and not padded.sampled
    assert padded.trace_state == "a=1,b=2"


@pytest.mark.parametrize("header", ["a=1,a=2", "a=x=y", "UPPER=1"])
def test_invalid_tracestate_is_dropped_like_the_sdk_does(header: str) -> None:
    parent = parse_traceparent(f"00-{TRACE}-{CALLER}-01", header)
    assert parent is not None and parent.trace_state == ""


def _sdk_decision(sampler: Any, trace_id: int, parent_sampled: bool | None) -> bool:
    context = None
    if parent_sampled is not None:
        flags = TraceFlags(1 if parent_sampled else 0)
        parent = SpanContext(trace_id, int(CALLER, 16), is_remote=True, trace_flags=flags)
        context = set_span_in_context(NonRecordingSpan(parent))
    return bool(sampler.should_sample(context, trace_id, "x").decision.is_sampled())


SAMPLERS = [
    ("always_on", None, ALWAYS_ON),
    ("always_off", None, ALWAYS_OFF),
    ("traceidratio", "0.25", TraceIdRatioBased(0.25)),
    ("parentbased_always_on", None, ParentBased(ALWAYS_ON)),
    ("parentbased_always_off", None, ParentBased(ALWAYS_OFF)),
    ("parentbased_traceidratio", "0.5", ParentBased(TraceIdRatioBased(0.5))),
]


@pytest.mark.parametrize(("name", "arg", "sdk"), SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_sampler_decides_like_the_sdk(name: str, arg: str | None, sdk: Any) -> None:
    ours = Sampler(name, arg)
    rng = random.Random(7)
    for _ in range(400):
        trace_id = rng.getrandbits(128)
        for parent_sampled in (None, True, False):
            parent = None
            if parent_sampled is not None:
                parent = parse_traceparent(
                    f"00-{trace_id:032x}-{CALLER}-{'01' if parent_sampled else '00'}", None
                )
            expected = _sdk_decision(sdk, trace_id, parent_sampled)
            assert ours.should_sample(trace_id, parent) is expected, (trace_id, parent_sampled)


def test_ratio_threshold_is_on_the_low_64_bits() -> None:
    sampler = Sampler("traceidratio", "0.5")
    half = 1 << 63
    assert sampler.should_sample((0xFFFF << 64) | (half - 1), None)
    assert not sampler.should_sample(half, None)


def test_unknown_sampler_and_bad_ratio_fall_back() -> None:
    assert Sampler("nonsense").name == "parentbased_always_on"
    assert Sampler("traceidratio", "not-a-number").bound == 1 << 64
    assert Sampler("traceidratio", "7").bound == 1 << 64


# --- the exporter ------------------------------------------------------------------------


def test_exporter_posts_like_the_sdk_exporter(
    sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.url + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    target = OtlpTarget.from_env()
    assert target.url == sink.url + "/v1/traces"
    exporter = SpanExporter(SpanEncoder(RESOURCE, "s"), target, BatchConfig(100, 2, 30.0))
    exporter.start()
    spans = _spans()
    for span in spans:
        exporter.submit(span)
    sink.wait_spans(2)  # a full batch (2) is sent at once, not after the 30 s delay
    exporter.shutdown()  # the third, with the shutdown flush
    assert len(sink.spans()) == 3
    headers = sink.exports[0][0]
    assert headers["path"] == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["content-encoding"] == "gzip"
    assert headers["x-tenant"] == "acme"
    assert headers["authorization"] == "Bearer t"


def test_traces_endpoint_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:9999/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    target = OtlpTarget.from_env()
    assert (target.url, target.timeout_s, target.compression) == (
        "http://collector:9999/custom",
        3.0,
        "none",
    )


def test_transient_collector_errors_are_retried(sink: OtlpSink) -> None:
    sink.fail_next = 1
    target = OtlpTarget(sink.url + "/v1/traces", {"content-type": "application/x-protobuf"})
    exporter = SpanExporter(SpanEncoder(RESOURCE, "s"), target, BatchConfig(100, 100, 30.0))
    for span in _spans():
        exporter.submit(span)
    exporter.shutdown()  # not started: drains on the caller's thread, backoff ~1 s
    assert len(sink.spans()) == 3 and sink.fail_next == 0


def test_full_queue_drops_and_counts() -> None:
    target = OtlpTarget(f"http://127.0.0.1:{free_port()}/v1/traces", timeout_s=0.2)
    exporter = SpanExporter(SpanEncoder(RESOURCE, "s"), target, BatchConfig(2, 2, 30.0))
    dropped = SPANS_DROPPED.labels("queue_full")
    before = dropped._value.get()
    for span in _spans():  # 3 spans, room for 2, nothing drains them (not started)
        exporter.submit(span)
    assert dropped._value.get() == before + 1
