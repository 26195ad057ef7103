"""One SERVER span for a raw-ASGI hot path, instead of OpenTelemetry's ASGI middleware.

The FastAPI instrumentation spends ~0.2 ms of CPU per request before the app runs (it
collects a dozen request attributes and matches the URL against every route to name the
span), ~0.6 ms on a cold path; on a path whose time to first token is the product, that
is a large share. A service that serves such a path itself (the inference service's
streamed generations) excludes it from the instrumentation (``create_service_app(...,
self_traced_paths=...)``) and wraps it in :func:`server_span`.

The span is a lean one (``lean_trace.py``, the gateway's proxy span's tracer), not an SDK
span: opening and ending an SDK span made current cost ~67 µs, on the critical path of
every streamed answer. What it reproduces:

- the caller's context from ``traceparent``/``tracestate`` (W3C; an invalid header starts
  a new trace), the sampler of ``OTEL_TRACES_SAMPLER``/``…_ARG``; a ``baggage`` header is
  kept in the request's context as the SDK's propagators would;
- one span named ``"{method} {route}"``, kind SERVER, with ``http.request.method``,
  ``http.route``, ``url.path``, ``url.scheme``, and ``http.response.status_code`` from the
  response start (5xx or an escaping exception marks it an error), set when it ends;
- the span is *current* for the request: an OpenTelemetry context holding a
  ``NonRecordingSpan`` with its ids is attached, so spans started inside (SDK ones, and
  :func:`start_child_span`'s) are its children in its trace, log lines and problems carry its trace
  id, and attributes set through ``trace.get_current_span()`` (the usage ledger's
  ``gen_ai.*``) land on it;
- sampled spans are exported by the process's lean exporter (``span_export.py``) to the
  endpoint the SDK exporter uses, with the SDK tracer provider's resource; it is made on
  the first span, only when an OTLP endpoint is configured, and flushed when the app's
  lifespan ends (:func:`flush_at_shutdown`, wired by ``setup_telemetry``) or else at exit
  (``atexit``). Without an endpoint nothing is exported, yet ids and context still
  propagate downstream.

:func:`start_child_span` makes the lean children of whatever span is current (this one,
or an SDK span off the fast path), exported by the same process exporter: a span on a
streamed answer's first-token path costs ~10 µs that way instead of an SDK span's ~60.
:func:`propagation_headers` are the headers a child CLIENT span sends downstream.

What it does not: span events (an escaping exception sets the ERROR status with its type
and message, without an ``exception`` event), links, ``OTEL_PROPAGATORS`` other than W3C
trace context, and span processors installed on the SDK provider never see this span.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import Token
from types import TracebackType
from typing import Any, cast

import anyio
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.util import types
from starlette.applications import Starlette
from starlette.types import Message, Scope, Send

from switchboard_common.lean_trace import (
    KIND_INTERNAL,
    AttributeValue,
    LeanSpan,
    LeanTracer,
    RemoteParent,
    Sampler,
)
from switchboard_common.otlp_encode import SpanEncoder
from switchboard_common.span_export import OtlpTarget, SpanExporter, resource_attributes

SCOPE_NAME = "switchboard.server"  # the instrumentation scope, as the SDK tracer's was
_TRACEPARENT = b"traceparent"
_TRACESTATE = b"tracestate"
_BAGGAGE = b"baggage"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NO_TRACE_STATE = TraceState()


class ProcessTracer:
    """The process's lean tracer and exporter: made on the first span (after the app set
    up its SDK tracer provider, whose resource the exporter reuses), flushed when the app's
    lifespan ends (:func:`flush_at_shutdown`) or at exit, and made anew in a forked child
    (the parent's export thread does not survive a fork)."""

    def __init__(self) -> None:
        self.tracer: LeanTracer | None = None
        self.exporter: SpanExporter | None = None
        self._lock = threading.Lock()
        self._at_exit = False

    def get(self) -> LeanTracer:
        tracer = self.tracer
        return tracer if tracer is not None else self._build()

    def _build(self) -> LeanTracer:
        # telemetry imports this module (excluded_url_pattern): import it when used
        from switchboard_common.telemetry import otlp_endpoint

        with self._lock:
            if self.tracer is None:
                exporter = None
                if otlp_endpoint():
                    encoder = SpanEncoder(resource_attributes(), SCOPE_NAME)
                    exporter = SpanExporter(encoder, OtlpTarget.from_env())
                    exporter.start()  # a daemon thread: it never keeps the process alive
                    if not self._at_exit:
                        atexit.register(self.shutdown)
                        self._at_exit = True
                self.exporter = exporter
                sink = exporter.submit if exporter is not None else None
                self.tracer = LeanTracer(Sampler.from_env(), sink)
            return self.tracer

    def shutdown(self) -> None:
        """Export what is queued, then forget the tracer (the next span makes a new one)."""
        exporter, self.exporter, self.tracer = self.exporter, None, None
        if exporter is not None:
            exporter.shutdown()

    def forget(self) -> None:
        """In a forked child: the parent's queue and thread are not this process's."""
        self.tracer = self.exporter = None
        self._lock = threading.Lock()


_process = ProcessTracer()
os.register_at_fork(after_in_child=_process.forget)


def flush_at_shutdown(app: Starlette) -> None:
    """Export the queued spans (the server spans' and the SDK provider's) when ``app``'s
    lifespan ends.

    ``atexit`` alone is not enough: uvicorn re-raises the SIGTERM it handled once it has
    shut down, so a service stopped that way dies of the signal without running ``atexit``
    handlers (the SDK's own flush among them). The lifespan's end comes after the last
    request, before that."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        try:
            async with inner(target) as state:
                yield state
        finally:
            await anyio.to_thread.run_sync(_flush)  # blocking: joins the export threads

    app.router.lifespan_context = lifespan


def _flush() -> None:
    _process.shutdown()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()


class _CurrentSpan(NonRecordingSpan):
    """The server span as OpenTelemetry's context sees it: its ids (SDK spans started
    inside become its children; logs read its trace id), and what is set through
    ``trace.get_current_span()`` goes to the lean span."""

    def __init__(self, span: LeanSpan) -> None:
        state = TraceState.from_header([span.trace_state]) if span.trace_state else None
        super().__init__(
            SpanContext(
                span.trace_id,
                span.span_id,
                is_remote=False,
                trace_flags=_SAMPLED if span.sampled else _NOT_SAMPLED,
                trace_state=state or _NO_TRACE_STATE,
            )
        )
        self.lean = span

    def is_recording(self) -> bool:
        return self.lean.is_recording()

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        # not once it ended (as the SDK): the export thread may be encoding it
        if not self.lean.is_recording():
            return
        if isinstance(value, str | bool | int | float):
            self.lean.set_attribute(key, value)
        elif isinstance(value, Sequence) and all(
            isinstance(v, str | bool | int | float) for v in value
        ):  # a tuple: hashable, for the encoder's attribute cache (the SDK keeps tuples too)
            self.lean.attributes[key] = cast(AttributeValue, tuple(value))
        # anything else (None, a mapping) is not an attribute value the SDK would keep

    def set_attributes(self, attributes: types.Attributes) -> None:
        for key, value in (attributes or {}).items():
            self.set_attribute(key, value)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.lean.is_recording():
            self.lean.set_status(status, description)


def _caller_headers(scope: Scope) -> tuple[str | None, str | None, str | None]:
    """``traceparent`` (the first), ``tracestate`` (all, joined as W3C allows) and
    ``baggage`` (the first), as the SDK's propagators read them."""
    traceparent = tracestate = baggage = None
    for name, value in scope["headers"]:
        if name == _TRACEPARENT:
            if traceparent is None:
                traceparent = value.decode("latin-1")
        elif name == _TRACESTATE:
            state = value.decode("latin-1")
            tracestate = state if tracestate is None else f"{tracestate},{state}"
        elif name == _BAGGAGE and baggage is None:
            baggage = value.decode("latin-1")
    return traceparent, tracestate, baggage


class ServerSpan:
    """The context manager :func:`server_span` returns: a class rather than a generator
    with a closure, a few µs less per request on the path it exists for."""

    __slots__ = ("_context", "_send", "_span", "_status", "_token")

    def __init__(self, span: LeanSpan, context: Context, send: Send) -> None:
        self._span = span
        self._context = context
        self._token: Token[Context] | None = None
        self._send = send
        self._status = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._status = int(message["status"])
        await self._send(message)

    def __enter__(self) -> Send:
        self._token = otel_context.attach(self._context)
        return self.send

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        span, status = self._span, self._status
        # recorded when the request ends, not on its first event's way out: the span is
        # exported only after it ends, so it carries the same attributes
        if status:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
        # an Exception, not any BaseException: a cancellation is no error (the SDK's rule)
        if isinstance(exc, Exception):
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()


def server_span(scope: Scope, route: str, send: Send, *, start_ns: int | None = None) -> ServerSpan:
    """Trace one HTTP request as the current SERVER span (``with server_span(...) as
    send``: the ``send`` to use, which records the response status on the span), from
    here to the end of the ``with`` block. ``start_ns`` (``time.time_ns()``): when the
    request began, for a caller that opens the span after doing some work for it."""
    traceparent, tracestate, baggage = _caller_headers(scope)
    method = scope.get("method", "GET")
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    span = _process.get().start_span(f"{method} {route}", traceparent, tracestate, attributes)
    if start_ns is not None:
        span.start_ns = start_ns
    base = propagate.extract({"baggage": baggage}) if baggage else Context()
    return ServerSpan(span, set_span_in_context(_CurrentSpan(span), base), send)


def start_child_span(
    name: str,
    attributes: Mapping[str, AttributeValue],
    *,
    kind: int = KIND_INTERNAL,
    start_ns: int | None = None,
    context: Context | None = None,
) -> LeanSpan:
    """A lean span (``lean_trace.py``), child of the span current in ``context`` (default:
    the current context): the server span above, an SDK span, or a remote one. It takes the
    parent's trace id and trace_state, and its sampled flag under the (default) parent-based
    sampler, so an unsampled parent's child records nothing yet has ids to propagate; with
    no valid parent it starts a new trace, sampled per ``OTEL_TRACES_SAMPLER``. Exported by
    the process exporter (when an OTLP endpoint is set) once ``span.end()`` is called;
    never made current (nothing in it may start SDK children). ``attributes`` are copied
    (the caller may keep a template); ``start_ns`` (``time.time_ns()``) for a span recorded
    late; ``kind`` a proto SpanKind (``lean_trace.KIND_CLIENT``…).

    Unlike an SDK span: no events (an error is its status, with the exception's type and
    message where the caller puts them), no links, and the instrumentation scope is the
    process exporter's (``switchboard.server``), not the caller's module."""
    current = trace.get_current_span(context)
    if isinstance(current, _CurrentSpan):  # the lean server span: its ids directly
        lean = current.lean
        parent: RemoteParent | None = RemoteParent(
            lean.trace_id, lean.span_id, lean.sampled, lean.trace_state
        )
        remote = False
    else:
        ctx = current.get_span_context()
        if ctx.is_valid:
            parent = RemoteParent(
                ctx.trace_id, ctx.span_id, ctx.trace_flags.sampled, ctx.trace_state.to_header()
            )
            remote = ctx.is_remote
        else:
            parent, remote = None, False
    span = _process.get().start_child(name, parent, dict(attributes), kind, parent_remote=remote)
    if start_ns is not None:
        span.start_ns = start_ns
    return span


_baggage = W3CBaggagePropagator()


def propagation_headers(span: LeanSpan, context: Context | None = None) -> dict[str, str]:
    """What ``propagate.inject`` would send for ``span`` as the current span: W3C
    ``traceparent`` with its ids and sampled flag, ``tracestate``, and the ``baggage`` of
    ``context`` (default: the current one), if any."""
    headers = {"traceparent": span.traceparent()}
    if span.trace_state:
        headers["tracestate"] = span.trace_state
    if otel_baggage.get_all(context):
        _baggage.inject(headers, context)
    return headers


def excluded_url_pattern(paths: list[str]) -> str:
    """``OTEL``-style excluded-URL regexes for exactly these paths (query string allowed)."""
    return ",".join(f"{path}(\\?|$)" for path in paths)
