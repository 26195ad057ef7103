"""Proxy-path telemetry: Prometheus metrics by service and a span per proxied request.

The proxy path bypasses FastAPI, so it records its own metrics (labelled by service, not
by path: bounded cardinality) and, when ``GATEWAY_TRACE_PROXY`` is on, opens a SERVER span
whose context is sent upstream as ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter, Gauge, Histogram

from switchboard_common.lean_trace import AttributeValue, LeanSpan
from switchboard_common.metrics import LATENCY_BUCKETS

PROXY_REQUESTS = Counter(
    "switchboard_gateway_proxy_requests_total",
    "Requests proxied to a service, by outcome status.",
    ("service", "method", "status"),
)
PROXY_LATENCY = Histogram(
    "switchboard_gateway_proxy_duration_seconds",
    "Time from request start to the last response byte, proxied requests.",
    ("service",),
    buckets=LATENCY_BUCKETS,
)
PROXY_IN_FLIGHT = Gauge(
    "switchboard_gateway_proxy_in_flight", "Proxied requests in flight.", ("service",)
)
UPSTREAM_ERRORS = Counter(
    "switchboard_gateway_upstream_errors_total",
    "Upstream failures seen by the proxy, by kind (refused, timeout, disconnected).",
    ("service", "kind"),
)

# --- upstream resilience (gateway/services/balancer.py, docs/resilience.md) ---
UPSTREAM_BREAKER_STATE = Gauge(
    "switchboard_gateway_upstream_breaker_state",
    "Circuit breaker of each service instance: 0 closed, 1 half-open, 2 open.",
    ("service", "instance"),
)
UPSTREAM_BREAKER_OPENED = Counter(
    "switchboard_gateway_upstream_breaker_opened_total",
    "Times an instance's circuit breaker opened (the instance was ejected).",
    ("service", "instance"),
)
UPSTREAM_RETRIES = Counter(
    "switchboard_gateway_upstream_retries_total",
    "Idempotent requests sent again after a failure before the response started.",
    ("service",),
)

# --- gateway response cache (gateway/services/response_cache.py, docs/caching.md) ---
CACHE_REQUESTS = Counter(
    "switchboard_gateway_cache_requests_total",
    "Requests on cached routes, by result: hit, revalidated (304 from the cache), "
    "miss, refresh (client no-cache), bypass (client no-store; completions: also not "
    "deterministic), unavailable (Redis), denied (a completion hit over the token budget); "
    "and by layer: get (GET responses), completion (deterministic completions).",
    ("result", "layer"),
)
CACHE_STORES = Counter(
    "switchboard_gateway_cache_stores_total",
    "Answers to cache misses, by outcome: stored, or why not (not_ok, streaming, "
    "too_large, no_store, set_cookie, vary, private, max_age, invalidated, unavailable; "
    "completions: incomplete, failed, no_usage, too_many_frames), by layer (get, completion).",
    ("outcome", "layer"),
)
CACHE_INVALIDATIONS = Counter(
    "switchboard_gateway_cache_invalidations_total",
    "Tags invalidated, by source: write, header (Switchboard-Cache-Invalidate), "
    "deferred (Redis unavailable; written before the next lookup), deferred_write.",
    ("source",),
)
CACHE_FAIL_OPEN = Counter(
    "switchboard_gateway_cache_fail_open_total",
    "Cache operations skipped because Redis failed or did not answer in time.",
)


class ServiceMetrics:
    """Metric children of one service, resolved once (``labels()`` is a dict lookup with
    locking; the hot path should not pay it three times per request)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.in_flight = PROXY_IN_FLIGHT.labels(service)
        self.latency = PROXY_LATENCY.labels(service)
        self._requests: dict[tuple[str, int], Counter] = {}

    def requests(self, method: str, status: int) -> Counter:
        key = (method, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = PROXY_REQUESTS.labels(self.service, method, str(status))
        return child


_service_metrics: dict[str, ServiceMetrics] = {}


def proxy_metrics(service: str) -> ServiceMetrics:
    metrics = _service_metrics.get(service)
    if metrics is None:
        metrics = _service_metrics[service] = ServiceMetrics(service)
    return metrics


_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("switchboard.gateway.proxy")


# The proxy span: a lean span (switchboard_common.lean_trace, the default) or an SDK span
# (GATEWAY_TRACE_LEAN=false); services/proxy_tracing.py picks.
ProxySpan = Span | LeanSpan


def start_proxy_span(
    name: str,
    traceparent: str | None,
    tracestate: str | None,
    attributes: Mapping[str, AttributeValue],
) -> Span:
    """The SDK path's span (``GATEWAY_TRACE_LEAN=false``)."""
    carrier: dict[str, str] = {}
    if traceparent:
        carrier["traceparent"] = traceparent
        if tracestate:
            carrier["tracestate"] = tracestate
    parent: Context | None = _propagator.extract(carrier) if carrier else None
    return _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)


def span_traceparent(span: ProxySpan) -> str | None:
    if isinstance(span, LeanSpan):
        return span.traceparent()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def span_trace_id(span: ProxySpan | None) -> str | None:
    if span is None:
        return None
    if isinstance(span, LeanSpan):
        return span.trace_id_hex()
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
