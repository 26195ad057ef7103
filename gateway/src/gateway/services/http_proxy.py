"""The HTTP proxy hot path: a raw ASGI callable, no FastAPI routing, no httpx, no aiohttp.

Per request it: takes or makes the request id, rewrites headers in one pass, refuses an
oversized body (413) before any upstream call, forwards method/path/query/body over a
pooled keep-alive connection, and streams the response back chunk by chunk (SSE and
NDJSON arrive as the upstream writes them). Small bodies with a known length are read
whole (one upstream write, one client write); anything else streams in both directions.

Getting the response head is ``exchange.py``'s job: it picks the service's next instance
whose circuit breaker is closed, records the outcome on the breaker and retries what is
safe to retry. Failures before the response starts become problems: refused → 503,
timeout → 504, other transport errors → 502, every instance's breaker open → 503 with
Retry-After. After the response started, an upstream failure can only cut the connection
(the client sees an incomplete body, never a silently truncated "success"), and nothing is
retried. A client that disconnects mid-stream closes the upstream connection: the service
sees the cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry.trace import StatusCode
from starlette.types import Receive, Scope, Send

from gateway.config import Settings
from gateway.core.headers import (
    UpstreamRequestHeaders,
    client_response_headers,
    upstream_request_headers,
)
from gateway.core.monitoring import (
    UPSTREAM_ERRORS,
    ProxySpan,
    proxy_metrics,
    span_trace_id,
    span_traceparent,
)
from gateway.core.responses import send_problem
from gateway.core.speculation import AdmissionRefused
from gateway.services.exchange import Exchanger, UpstreamFailure
from gateway.services.proxy_tracing import build_proxy_tracer
from gateway.services.request_body import (
    BUFFER_LIMIT,
    BodyTooLarge,
    ClientBodyTimeout,
    RequestBodyStream,
)
from gateway.services.upstreams import UpstreamPool
from switchboard_common.asgi_body import ClientDisconnected, read_body
from switchboard_common.body_limit import too_large_message
from switchboard_common.disconnect import DisconnectWatch
from switchboard_common.lean_http import (
    UpstreamConnection,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway.proxy")

_EMPTY_BODY = {"type": "http.response.body", "body": b"", "more_body": False}


class HttpProxy:
    def __init__(self, pool: UpstreamPool, settings: Settings) -> None:
        self.pool = pool
        self.max_body = settings.max_body_bytes
        self.read_timeout = settings.read_timeout_s
        self.exchanger = Exchanger(settings)
        self.tracer = build_proxy_tracer(settings)  # None: proxy spans off

    def start(self) -> None:
        """Start the span exporter's thread (lifespan start)."""
        if self.tracer is not None:
            self.tracer.start()

    async def close(self) -> None:
        """Export the spans still queued (lifespan end); off the event loop, it blocks."""
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)

    async def __call__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        identity: list[tuple[bytes, bytes]] | None = None,
        response_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Proxy one request. ``identity``: gateway-signed headers for an authenticated
        caller (the client's credentials are then not forwarded); None on public routes.
        ``response_headers``: added to the upstream's answer (e.g. RateLimit-*)."""
        started = time.perf_counter()
        method: str = scope["method"]
        request_id = scope.get("switchboard.request_id") or request_id_from_headers(
            scope["headers"]
        )
        req = upstream_request_headers(scope, request_id, identity=identity)
        span: ProxySpan | None = None
        tracestate = req.tracestate
        if self.tracer is not None:
            span = self.tracer.start_span(
                f"{method} /{service}",
                req.traceparent,
                req.tracestate,
                {"http.request.method": method, "url.path": scope["path"], "peer.service": service},
            )
            traceparent = span_traceparent(span)
            if traceparent:
                req.headers.append((b"traceparent", traceparent.encode()))
            if tracestate and not (
                traceparent and req.traceparent and traceparent[3:35] == req.traceparent[3:35]
            ):
                tracestate = None  # W3C: a tracestate without its (valid) traceparent is dropped
        elif req.traceparent:
            req.headers.append((b"traceparent", req.traceparent.encode()))
        if tracestate:
            req.headers.append((b"tracestate", tracestate.encode()))

        metrics = proxy_metrics(service)
        metrics.in_flight.inc()
        status = 500
        try:
            status = await self._forward(
                scope, receive, send, service, req, request_id, span, response_headers
            )
        except ClientBodyTimeout:
            status = 408  # the dispatcher answers it (core/dispatch.py)
            raise
        except AdmissionRefused as refused:
            status = refused.decision.status  # sent ahead, then refused: the dispatcher answers
            raise
        except Exception:
            # a bug: the dispatcher's last-resort 500 quotes this span's trace
            scope["switchboard.trace_id"] = span_trace_id(span)
            raise
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)
            metrics.requests(method, status).inc()
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                span.end()

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        req: UpstreamRequestHeaders,
        request_id: str,
        span: ProxySpan | None,
        response_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        rid = request_id.encode()
        path: str = scope["path"]
        length = req.content_length
        if length is not None and length < 0:
            detail = "Invalid Content-Length header."
            return await self._problem(send, 400, detail, scope, rid, span)
        if length is not None and length > self.max_body:
            return await self._too_large(send, path, request_id)

        body = b""
        stream: RequestBodyStream | None = None
        if req.chunked or (length is not None and length > BUFFER_LIMIT):
            stream = RequestBodyStream(receive, self.max_body)
        elif length:
            try:
                body = await read_body(receive)
            except ClientDisconnected:
                return 499  # nginx's "client closed request"; nothing is sent

        target: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        if query:
            target += b"?" + query
        method: str = scope["method"]
        try:
            inst, conn, resp = await self.exchanger.exchange(
                self.pool.balancers[service],
                method,
                target,
                req.headers,
                body,
                stream,
                length,
                receive,
                request_id,
            )
        except ClientDisconnected:
            return 499
        except BodyTooLarge:
            return await self._too_large(send, path, request_id)
        except UpstreamFailure as failure:
            headers = []
            if failure.retry_after is not None:
                headers.append((b"retry-after", b"%d" % failure.retry_after))
            return await self._problem(
                send, failure.status, failure.detail, scope, rid, span, headers
            )

        body_consumed = stream is None or stream.finished
        try:
            return await self._respond(
                conn, resp, scope, receive, send, rid, body_consumed, service, response_headers
            )
        finally:
            inst.client.release(conn, resp)

    async def _respond(
        self,
        conn: UpstreamConnection,
        resp: UpstreamResponse,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        body_consumed: bool,
        service: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        headers, streaming, length = client_response_headers(resp.headers, rid)
        if extra_headers:
            headers.extend(extra_headers)
        status = resp.status
        if scope["method"] == "HEAD" or status in (204, 304):
            if scope["method"] == "HEAD":
                conn.close()  # the parser would wait for a body the upstream will not send
            else:  # no body: a Content-Length here would make our server expect one
                headers = [h for h in headers if h[0] != b"content-length"]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send(_EMPTY_BODY)
            return status
        if not streaming and length is not None and length <= BUFFER_LIMIT:
            try:
                body = await resp.read(self.read_timeout)
            except UpstreamError as exc:
                conn.close()
                timed_out = isinstance(exc, UpstreamTimeout)
                UPSTREAM_ERRORS.labels(service, "timeout" if timed_out else "disconnected").inc()
                detail = f"The {service} service stopped sending its response."
                return await self._problem(
                    send, 504 if timed_out else 502, detail, scope, rid, None
                )
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return status

        await send({"type": "http.response.start", "status": status, "headers": headers})
        if not body_consumed:
            await self._pump(conn, resp, send, service, None)
            return status
        # the stream runs in this task; a disconnect (noticed from the first chunk on)
        # cancels it, and the upstream connection is dropped: the upstream sees the cancel
        watch = DisconnectWatch(receive)
        try:
            await self._pump(conn, resp, send, service, watch)
        except asyncio.CancelledError:
            if not watch.stop():
                raise
            conn.close()
            logger.info("client went away mid-stream; upstream %s request cancelled", service)
        else:
            watch.stop()
        return status

    async def _pump(
        self,
        conn: UpstreamConnection,
        resp: UpstreamResponse,
        send: Send,
        service: str,
        watch: DisconnectWatch | None,
    ) -> None:
        try:
            async for chunk in resp.iter_body(self.read_timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watch is not None:
                    watch.start()
        except UpstreamError as exc:
            # Too late for a problem: cut the connection so the client sees the failure.
            conn.close()
            UPSTREAM_ERRORS.labels(service, "mid_stream").inc()
            logger.warning("upstream %s failed mid-body: %s", service, exc)
            return
        await send(_EMPTY_BODY)

    async def _too_large(self, send: Send, path: str, request_id: str) -> int:
        start, body = too_large_message(self.max_body, path, request_id)
        await send(start)
        await send(body)
        return 413

    async def _problem(
        self,
        send: Send,
        status: int,
        detail: str,
        scope: Scope,
        rid: bytes,
        span: ProxySpan | None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        return await send_problem(
            send,
            status,
            detail,
            instance=scope["path"],
            request_id=rid.decode(),
            trace_id=span_trace_id(span),
            headers=extra_headers,
        )
