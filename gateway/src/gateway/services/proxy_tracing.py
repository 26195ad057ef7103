"""Which tracer opens the proxy span: the lean one (default) or the OpenTelemetry SDK.

- ``GATEWAY_TRACE_PROXY`` off (the default when nothing exports spans): no tracer; the
  proxy forwards a client's ``traceparent`` unchanged.
- ``GATEWAY_TRACE_LEAN`` on (default): ``switchboard_common.lean_trace`` spans, exported
  by ``switchboard_common.span_export`` when the SDK exporter would be active
  (``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` set), with the SDK provider's resource.
- ``GATEWAY_TRACE_LEAN=false``: SDK spans (``core/monitoring.start_proxy_span``), for
  deployments that rely on their own SDK span processors seeing the proxy span.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.trace import Span

from gateway.config import Settings
from gateway.core.monitoring import start_proxy_span
from switchboard_common.lean_trace import AttributeValue, LeanSpan, LeanTracer, Sampler
from switchboard_common.otlp_encode import SpanEncoder
from switchboard_common.span_export import OtlpTarget, SpanExporter, resource_attributes
from switchboard_common.telemetry import otlp_endpoint

PROXY_SCOPE = "switchboard.gateway.proxy"  # the SDK path's tracer name, too


class ProxyTracer(Protocol):
    def start_span(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, AttributeValue],
    ) -> Span | LeanSpan: ...

    def start(self) -> None: ...

    def shutdown(self) -> None: ...


class SdkProxyTracer:
    """The SDK path: spans go through the process's tracer provider and its processors."""

    def start_span(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, AttributeValue],
    ) -> Span:
        return start_proxy_span(name, traceparent, tracestate, attributes)

    def start(self) -> None:
        """The provider's processors run on their own."""

    def shutdown(self) -> None:
        """The provider flushes at exit (``atexit``)."""


class LeanProxyTracer:
    def __init__(self, tracer: LeanTracer, exporter: SpanExporter | None) -> None:
        self.tracer = tracer
        self.exporter = exporter
        self.start_span = tracer.start_span

    def start(self) -> None:
        if self.exporter is not None:
            self.exporter.start()

    def shutdown(self) -> None:
        if self.exporter is not None:
            self.exporter.shutdown()


def build_proxy_tracer(settings: Settings) -> ProxyTracer | None:
    """None when proxy spans are off. Call after the tracer provider is installed
    (``create_service_app``), whose resource the lean exporter reuses."""
    exporting = bool(otlp_endpoint())
    enabled = settings.trace_proxy if settings.trace_proxy is not None else exporting
    if not enabled:
        return None
    if not settings.trace_lean:
        return SdkProxyTracer()
    exporter = None
    if exporting:
        resource = resource_attributes(settings.service_name, settings.version)
        encoder = SpanEncoder(resource, PROXY_SCOPE)
        exporter = SpanExporter(encoder, OtlpTarget.from_env())
    sink = exporter.submit if exporter is not None else None
    return LeanProxyTracer(LeanTracer(Sampler.from_env(), sink), exporter)
