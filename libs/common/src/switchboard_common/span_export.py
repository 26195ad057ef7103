"""Exports lean spans (``lean_trace.py``) over OTLP/HTTP protobuf, from a background thread.

Like the SDK's ``BatchSpanProcessor`` + ``OTLPSpanExporter``, configured by the same
environment variables, but built for hot paths (the gateway's proxy span, a service's
:func:`~switchboard_common.server_span.server_span`):

- ending a span appends it to a bounded ``deque`` (atomic under the GIL, no lock); when
  the queue is full the span is dropped and counted
  (``switchboard_trace_spans_dropped_total``), never blocking a request;
- a daemon thread wakes every ``OTEL_BSP_SCHEDULE_DELAY`` ms, or as soon as a full batch
  (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``) is waiting, encodes the batch by hand
  (``otlp_encode.py``) and POSTs it;
- the POST goes where the SDK exporter would send it: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  as is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``; with
  ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``, ``…_TIMEOUT`` (s), ``…_COMPRESSION`` (gzip,
  deflate) and ``…_CERTIFICATE``; retried on 429/502/503/504 and connection errors with
  exponential backoff inside the timeout, like the SDK;
- ``shutdown()`` (the gateway's lifespan; ``atexit`` for ``server_span``'s exporter)
  exports what is queued before the process exits.

It uses ``http.client`` on purpose: httpx calls are auto-instrumented, and an exporter
that traces its own exports would feed itself.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import random
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.util.re import parse_env_headers
from prometheus_client import Counter

from switchboard_common.lean_trace import LeanSpan
from switchboard_common.otlp_encode import ResourceValue, SpanEncoder

logger = logging.getLogger("switchboard.trace")

SPANS_EXPORTED = Counter(
    "switchboard_trace_spans_exported_total",
    "Lean spans (the gateway's proxy spans, services' hot-path server spans) the lean "
    "exporter delivered to the OTLP endpoint.",
)
SPANS_DROPPED = Counter(
    "switchboard_trace_spans_dropped_total",
    "Lean spans dropped: queue full (OTEL_BSP_MAX_QUEUE_SIZE) or the export failed.",
    ("reason",),
)

_RETRYABLE: Final = frozenset({429, 502, 503, 504})
_MAX_ATTEMPTS: Final = 6
_USER_AGENT: Final = "switchboard-lean-otlp"


def _env(name: str, *fallbacks: str) -> str | None:
    for key in (name, *fallbacks):
        value = os.environ.get(key)
        if value:
            return value
    return None


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        logger.warning("invalid %s=%r; using %s", name, raw, default)
        return default


@dataclass(frozen=True)
class OtlpTarget:
    """Where and how to POST, resolved from the standard ``OTEL_*`` variables."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str = "none"  # none | gzip | deflate
    certificate: str | None = None

    @classmethod
    def from_env(cls) -> OtlpTarget:
        url = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if url is None:
            base = _env("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
            url = base.removesuffix("/") + "/v1/traces"
        headers = {"content-type": "application/x-protobuf", "user-agent": _USER_AGENT}
        raw_headers = _env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
        headers.update(parse_env_headers(raw_headers or "", liberal=True))
        timeout = _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
        raw_compression = _env(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"
        )
        compression = (raw_compression or "none").strip().lower()
        if compression not in ("none", "gzip", "deflate"):
            logger.warning("unsupported OTLP compression %r; sending uncompressed", compression)
            compression = "none"
        if compression != "none":
            headers.setdefault("content-encoding", compression)
        try:
            timeout_s = float(timeout) if timeout else 10.0
        except ValueError:
            timeout_s = 10.0
        certificate = _env(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"
        )
        return cls(url, headers, timeout_s, compression, certificate)


@dataclass(frozen=True)
class BatchConfig:
    """``OTEL_BSP_*`` with the SDK's defaults."""

    max_queue: int = 2048
    max_batch: int = 512
    delay_s: float = 5.0

    @classmethod
    def from_env(cls) -> BatchConfig:
        max_queue = max(1, int(_env_number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)))
        max_batch = max(1, int(_env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)))
        # at least 1 ms: a zero delay would make the export thread spin
        delay_s = max(0.001, _env_number("OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000)
        return cls(max_queue, min(max_batch, max_queue), delay_s)


class OtlpPoster:
    """One keep-alive connection to the collector; the SDK's retry policy."""

    def __init__(self, target: OtlpTarget) -> None:
        self.target = target
        parts = urlsplit(target.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None
        self.stopping = threading.Event()

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                context = ssl.create_default_context(cafile=self.target.certificate)
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout_s, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        self._conn.timeout = timeout_s
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _compress(self, body: bytes) -> bytes:
        if self.target.compression == "gzip":
            return gzip.compress(body, compresslevel=6)
        if self.target.compression == "deflate":
            return zlib.compress(body)
        return body

    def _attempt(self, body: bytes, timeout_s: float) -> int | None:
        """The response status, or None after a connection error (tried twice: a stale
        keep-alive connection fails once, then a fresh one is made)."""
        error: Exception | None = None
        for _ in range(2):
            try:
                conn = self._connection(timeout_s)
                conn.request("POST", self._path, body, dict(self.target.headers))
                resp = conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.close()
                return resp.status
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                error = exc
        logger.debug("OTLP export connection failed: %s", error)
        return None

    def post(self, payload: bytes) -> bool:
        body = self._compress(payload)
        deadline = time.monotonic() + self.target.timeout_s
        status: int | None = None
        for attempt in range(_MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            status = self._attempt(body, remaining)
            if status is not None and 200 <= status < 400:
                return True
            if status is not None and status not in _RETRYABLE:
                break
            backoff = 2**attempt * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
            if backoff > deadline - time.monotonic() or self.stopping.wait(backoff):
                break
        logger.warning("OTLP span export to %s failed (status %s)", self.target.url, status)
        return False


class SpanExporter:
    """Bounded queue of ended spans → batches → OTLP/HTTP, on one daemon thread."""

    def __init__(
        self,
        encoder: SpanEncoder,
        target: OtlpTarget,
        batch: BatchConfig | None = None,
    ) -> None:
        self.encoder = encoder
        self.batch = batch or BatchConfig.from_env()
        self.poster = OtlpPoster(target)
        self._queue: deque[LeanSpan] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._max_queue = self.batch.max_queue
        self._max_batch = self.batch.max_batch
        self._dropped = SPANS_DROPPED.labels("queue_full")

    def submit(self, span: LeanSpan) -> None:
        """The span sink: called by ``LeanSpan.end`` on the event loop, must stay cheap."""
        queue = self._queue
        size = len(queue)
        if size >= self._max_queue:
            self._dropped.inc()
            return
        queue.append(span)
        if size + 1 == self._max_batch:
            self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="lean-otlp-exporter", daemon=True
            )
            self._thread.start()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export what is queued, then stop (blocking: call it off the event loop)."""
        thread, self._thread = self._thread, None
        self._stopping = True
        self._wake.set()
        if thread is not None:
            # the last batches still get the exporter's retries, within timeout_s in all
            # (like the SDK's BatchSpanProcessor)
            thread.join(timeout_s)
            self.poster.stopping.set()
            if thread.is_alive():  # still posting: its connection is not ours to close
                logger.warning("span exporter still busy after %gs; leaving it", timeout_s)
                return
        else:
            self._drain()
        self.poster.stopping.set()
        self.poster.close()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.batch.delay_s)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        queue, popleft = self._queue, self._queue.popleft
        while queue:
            count = min(len(queue), self._max_batch)
            spans = [popleft() for _ in range(count)]
            try:
                payload = self.encoder.request(spans)
            except Exception:  # a bad attribute must not kill the exporter thread
                logger.exception("could not encode %d spans", count)
                SPANS_DROPPED.labels("encode_failed").inc(count)
                continue
            if self.poster.post(payload):
                SPANS_EXPORTED.inc(count)
            else:
                SPANS_DROPPED.labels("export_failed").inc(count)


def resource_attributes(
    service_name: str | None = None, version: str | None = None
) -> dict[str, ResourceValue]:
    """The resource of the process's SDK tracer provider (``service.name``, ``telemetry.*``,
    ``OTEL_RESOURCE_ATTRIBUTES``…), so lean spans and SDK spans share one resource.

    Without an SDK provider, the one ``install_tracer_provider`` would make from
    ``service_name``/``version`` (the SDK's defaults for what is not given)."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        resource = provider.resource
    else:  # the same call as switchboard_common.telemetry.install_tracer_provider
        given = {"service.name": service_name, "service.version": version}
        resource = Resource.create({k: v for k, v in given.items() if v is not None})
    return dict(resource.attributes)  # type: ignore[arg-type]
