"""Telemetry in one call: ``setup_telemetry(app, settings)``.

- an OpenTelemetry tracer provider named after the service (always installed, so logs and
  problems carry trace ids); spans are exported over OTLP/HTTP only when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (standard OTel env vars apply);
- FastAPI, httpx and redis instrumentation (semantic-convention ``http.*`` attributes);
- Prometheus request metrics by route template and a ``/metrics`` route;
- JSON logs carrying ``trace_id`` and ``request_id``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from switchboard_common.logs import configure_logging
from switchboard_common.metrics import PrometheusMiddleware, metrics_endpoint
from switchboard_common.server_span import excluded_url_pattern, flush_at_shutdown
from switchboard_common.settings import ServiceSettings

logger = logging.getLogger("switchboard.telemetry")
_lock = threading.Lock()
_provider_installed = False
_clients_instrumented = False

NOT_TRACED_URLS = "health,ready,metrics"


def otlp_endpoint() -> str | None:
    """Where spans are exported, or None when they are not."""
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )


def install_tracer_provider(service_name: str, version: str) -> None:
    """Install the process-wide tracer provider once (idempotent)."""
    global _provider_installed
    with _lock:
        if _provider_installed:
            return
        resource = Resource.create({"service.name": service_name, "service.version": version})
        provider = TracerProvider(resource=resource)
        endpoint = otlp_endpoint()
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            logger.info("exporting traces over OTLP", extra={"otlp_endpoint": endpoint})
        trace.set_tracer_provider(provider)
        _provider_installed = True


def instrument_clients() -> None:
    """Instrument httpx and redis clients process-wide (idempotent).

    Called by ``serve()`` when a service process starts, not when an app is built, so
    building an app in a test process does not patch that process's own HTTP clients.
    """
    global _clients_instrumented
    with _lock:
        if _clients_instrumented:
            return
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        HTTPXClientInstrumentor().instrument()
        RedisInstrumentor().instrument()
        _clients_instrumented = True


def setup_telemetry(
    app: FastAPI, settings: ServiceSettings, self_traced_paths: Sequence[str] = ()
) -> None:
    """Wire logs, traces and metrics for one service app (``self_traced_paths``: left to
    the app's own :func:`~switchboard_common.server_span.server_span`)."""
    configure_logging(
        settings.service_name,
        settings.log_level,
        json_logs=settings.log_json,
        access_log=settings.access_log,
    )
    install_tracer_provider(settings.service_name, settings.version)
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # One span per request, not one more per ASGI message: a streamed answer would otherwise
    # open and export a span for every token event it sends.
    excluded = NOT_TRACED_URLS
    if self_traced_paths:
        excluded += "," + excluded_url_pattern(list(self_traced_paths))
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=excluded, exclude_spans=["receive", "send"]
    )
    flush_at_shutdown(app)  # the self-traced paths' spans, exported at shutdown
    app.add_middleware(PrometheusMiddleware, service=settings.service_name)
    # an API route, not a plain one: only those put themselves in the scope, so scrapes are
    # counted under route="/metrics" instead of with the unmatched requests
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
