"""One SERVER span for a raw-ASGI hot path, instead of OpenTelemetry's ASGI middleware.

The FastAPI instrumentation spends ~0.2 ms of CPU per request before the app runs (it
collects a dozen request attributes and matches the URL against every route to name the
span), ~0.6 ms on a cold path; on a path whose time to first token is the product, that
is a large share. A service that serves such a path itself (the inference service's
streamed generations) excludes it from the instrumentation (``create_service_app(...,
self_traced_paths=...)``) and wraps it in :func:`server_span`: the caller's trace context
from ``traceparent``/``tracestate``, one span named ``"{method} {route}"`` made current
for the request (so every child span, log line and problem carries its trace id), and
``http.response.status_code`` from the response start (5xx marks the span an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Message, Scope, Send

_tracer = trace.get_tracer("switchboard.server")


class _HeaderGetter(Getter[Scope]):
    """Reads propagation headers straight from an ASGI scope."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier["headers"] if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier["headers"]]


_getter = _HeaderGetter()


@contextmanager
def server_span(scope: Scope, route: str, send: Send) -> Iterator[Send]:
    """Trace one HTTP request as the current SERVER span; yields the ``send`` to use (it
    records the response status on the span)."""
    context = propagate.extract(scope, getter=_getter)
    method = scope.get("method", "GET")
    attributes = {
        "http.request.method": method,
        "http.route": route,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    with _tracer.start_as_current_span(
        f"{method} {route}", context=context, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        status = 0

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            yield traced_send
        finally:
            # recorded when the request ends, not on its first event's way out: the span
            # is exported only after it ends, so it carries the same attributes
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)


def excluded_url_pattern(paths: list[str]) -> str:
    """``OTEL``-style excluded-URL regexes for exactly these paths (query string allowed)."""
    return ",".join(f"{path}(\\?|$)" for path in paths)
