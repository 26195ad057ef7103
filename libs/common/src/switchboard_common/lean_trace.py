"""A lean span for hot paths: W3C trace context in, one SERVER span, context out.

Why not the OpenTelemetry SDK span: the SDK costs ~60 µs of CPU to create and end one
span (contexts, locks, attribute validation, span processors), a third of what a whole
request costs on the gateway's proxy path and a visible share of a streamed answer's time
to first token. A request's SERVER span needs none of that machinery: it has a fixed shape
(a name, a few attributes, a status). ``LeanSpan`` is that shape with ``__slots__``;
``LeanTracer`` reproduces the SDK's decisions that matter for interoperability:

- ids from ``random.getrandbits`` like the SDK's ``RandomIdGenerator``;
- an incoming ``traceparent`` (W3C) keeps its trace id and becomes the parent;
  ``tracestate`` is recorded as the SDK would; an invalid header starts a new trace;
- the sampler named by ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, deciding a
  ratio by the trace id's low 64 bits against the same threshold as ``TraceIdRatioBased``;
- an unsampled span is not recorded, yet still gets its own span id and sends a
  ``traceparent`` with the sampled flag off, so downstream services agree.

Ended sampled spans go to a ``sink`` (the exporter's queue, ``span_export.py``). Users:
the gateway's proxy span (never made current, no children in its process),
:func:`switchboard_common.server_span.server_span` (made current through an OpenTelemetry
context, so SDK child spans and log lines join it) and
:func:`switchboard_common.server_span.start_child_span` (:meth:`LeanTracer.start_child`:
a CLIENT or INTERNAL child of the current span, e.g. the inference service's Ollama call
and admission span, which cost an SDK span's ~60 µs on a streamed answer's first token).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Final, NamedTuple

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState

logger = logging.getLogger("switchboard.trace")

AttributeValue = str | bool | int | float
SpanSink = Callable[["LeanSpan"], None]

# proto SpanKind numbers (opentelemetry/proto/trace/v1/trace.proto): the API enum + 1
KIND_INTERNAL: Final = SpanKind.INTERNAL.value + 1  # 1
KIND_SERVER: Final = SpanKind.SERVER.value + 1  # 2
KIND_CLIENT: Final = SpanKind.CLIENT.value + 1  # 3
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_SAMPLED_LAST_DIGITS = frozenset("13579bdf")  # flags & 0x01
_getrandbits = random.getrandbits
_time_ns = time.time_ns


class LeanSpan:
    """One span. The interface is the part of the SDK ``Span`` its users call."""

    __slots__ = (
        "_sink",
        "attributes",
        "end_ns",
        "kind",
        "name",
        "parent_remote",
        "parent_span_id",
        "sampled",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_span_id: int,
        trace_state: str,
        attributes: dict[str, AttributeValue],
        sampled: bool,
        sink: SpanSink | None,
        kind: int = KIND_SERVER,
        parent_remote: bool | None = None,
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id  # 0: a root span
        # the OTLP is-remote flag: a caller's span (the default when there is a parent)
        # or a span of this process (a child span's parent)
        self.parent_remote = bool(parent_span_id) if parent_remote is None else parent_remote
        self.sampled = sampled
        self.trace_state = trace_state
        self.kind = kind
        self.attributes = attributes
        self.status_code = 0  # proto Status.code: 0 unset, 1 ok, 2 error
        self.status_message = ""
        self._sink = sink
        self.end_ns = 0
        self.start_ns = _time_ns()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, Status):
            description = status.description
            status = status.status_code
        self.status_code = status.value  # the API enum and the proto share numbers
        # the SDK keeps a description only on errors; so does OTLP
        self.status_message = (description or "") if status is StatusCode.ERROR else ""

    def is_recording(self) -> bool:
        return self.sampled and not self.end_ns

    def end(self, end_ns: int | None = None) -> None:
        """End it now, or at ``end_ns`` (``time.time_ns()``) for a span recorded late."""
        if self.end_ns:
            return
        self.end_ns = end_ns or _time_ns()
        if self._sink is not None:
            self._sink(self)

    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"


class RemoteParent(NamedTuple):
    """A parent span's context: a caller's (``traceparent``), or, for
    :meth:`LeanTracer.start_child`, a span of this process."""

    # a NamedTuple: built per request, and a frozen dataclass costs ~1 µs more to build
    trace_id: int
    span_id: int
    sampled: bool
    trace_state: str


def parse_traceparent(traceparent: str | None, tracestate: str | None) -> RemoteParent | None:
    """The caller's span context, or None when there is none or it is invalid (W3C)."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent)
    if match is None:
        match = _TRACEPARENT.match(traceparent.strip())
        if match is None:
            return None
    version, trace_hex, span_hex, flags_hex, rest = match.groups()
    if version == "ff" or (rest and version == "00"):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    sampled = flags_hex[1] in _SAMPLED_LAST_DIGITS
    return RemoteParent(trace_id, span_id, sampled, _tracestate(tracestate) if tracestate else "")


def _tracestate(header: str) -> str:
    """The span's trace_state as the SDK records it: parsed by the SDK's own W3C rules (an
    invalid member or a duplicate key discards the whole header), re-joined with ``,``.
    Rare enough (most callers send none) to afford the SDK's parser here."""
    return ",".join(f"{k}={v}" for k, v in TraceState.from_header([header]).items())


class Sampler:
    """``OTEL_TRACES_SAMPLER`` semantics: a root decision (always on/off, trace-id ratio),
    optionally behind ``parentbased_*`` which follows a remote parent's sampled flag."""

    __slots__ = ("bound", "name", "parent_based", "root_on")

    def __init__(self, name: str = "parentbased_always_on", arg: str | None = None) -> None:
        name = name.strip().lower() or "parentbased_always_on"
        self.parent_based = name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        if root not in ("always_on", "always_off", "traceidratio"):
            logger.warning("unknown OTEL_TRACES_SAMPLER %r; using parentbased_always_on", name)
            name, root, self.parent_based = "parentbased_always_on", "always_on", True
        self.name = name
        self.root_on = root == "always_on"
        # TraceIdRatioBased: sampled when the trace id's low 64 bits are below the bound
        self.bound = round(_ratio(arg) * (1 << 64)) if root == "traceidratio" else -1

    @classmethod
    def from_env(cls) -> Sampler:
        return cls(
            os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            os.environ.get("OTEL_TRACES_SAMPLER_ARG"),
        )

    def should_sample(self, trace_id: int, parent: RemoteParent | None) -> bool:
        if parent is not None and self.parent_based:
            return parent.sampled
        if self.bound >= 0:
            return (trace_id & 0xFFFFFFFFFFFFFFFF) < self.bound
        return self.root_on


def _ratio(arg: str | None) -> float:
    try:
        ratio = float(arg) if arg is not None else 1.0
    except ValueError:
        logger.warning("invalid OTEL_TRACES_SAMPLER_ARG %r; using 1.0", arg)
        return 1.0
    return ratio if 0.0 <= ratio <= 1.0 else 1.0


class LeanTracer:
    """Starts spans; sampled ones are handed to ``sink`` when they end.

    ``sink=None`` (nothing exports spans) still makes spans: the process then only
    propagates context, as with the SDK and no span processor.
    """

    def __init__(self, sampler: Sampler, sink: SpanSink | None) -> None:
        self.sampler = sampler
        self.sink = sink

    def start_span(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, AttributeValue],
    ) -> LeanSpan:
        parent = parse_traceparent(traceparent, tracestate) if traceparent else None
        return self.start_child(name, parent, attributes, KIND_SERVER, parent_remote=True)

    def start_child(
        self,
        name: str,
        parent: RemoteParent | None,
        attributes: dict[str, AttributeValue],
        kind: int = KIND_INTERNAL,
        *,
        parent_remote: bool = False,
    ) -> LeanSpan:
        """A span under ``parent`` (its trace, trace_state and, through a parent-based
        sampler, its sampled flag, as the SDK's ``ParentBased`` decides for any parent),
        or the root of a new trace. ``attributes`` is kept, not copied."""
        span_id = _getrandbits(64) or 1
        if parent is None:
            trace_id = _getrandbits(128) or 1
            parent_span_id, trace_state = 0, ""
        else:
            trace_id, parent_span_id, trace_state = (
                parent.trace_id,
                parent.span_id,
                parent.trace_state,
            )
        sampled = self.sampler.should_sample(trace_id, parent)
        # unsampled: no record, but the span still has an id and says "not sampled" upstream
        sink = self.sink if sampled else None
        return LeanSpan(
            name,
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            attributes,
            sampled,
            sink,
            kind,
            parent_remote and parent is not None,
        )
