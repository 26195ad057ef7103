"""Prometheus metrics for HTTP traffic, labelled by route template (never by raw path).

Metrics (one set per process, the ``service`` label tells services apart):
- ``switchboard_http_requests_total{service,method,route,status}``
- ``switchboard_http_request_duration_seconds{service,method,route}`` (histogram)
- ``switchboard_http_requests_in_flight{service,method}`` (gauge)

``route`` is the matched template (``/knowledge/collections/{name}``) or ``<unmatched>``,
so label cardinality stays bounded whatever clients send. It is read from ``scope["route"]``
once routing has run, which is why the in-flight gauge (incremented before routing) is
labelled by method only: resolving the route up front would run the router twice.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class HttpMetrics:
    """The three HTTP metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "switchboard_http_requests_total",
            "HTTP requests handled, by route template and status.",
            ("service", "method", "route", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "switchboard_http_request_duration_seconds",
            "Time from request start to the end of the response body.",
            ("service", "method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "switchboard_http_requests_in_flight",
            "Requests being handled now.",
            ("service", "method"),
            registry=registry,
        )


_default: HttpMetrics | None = None


def http_metrics() -> HttpMetrics:
    """The process-wide metric families (created on first use)."""
    global _default
    if _default is None:
        _default = HttpMetrics()
    return _default


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (set by Starlette's router)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class PrometheusMiddleware:
    """Counts, times and gauges every HTTP request by route template."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        self.metrics = http_metrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500
        in_flight = self.metrics.in_flight.labels(self.service, method)
        in_flight.inc()
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            in_flight.dec()
            route = route_template(scope)
            self.metrics.latency.labels(self.service, method, route).observe(
                time.perf_counter() - start
            )
            self.metrics.requests.labels(self.service, method, route, str(status)).inc()


async def metrics_endpoint(_: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
