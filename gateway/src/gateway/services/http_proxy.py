"""The HTTP proxy hot path: a raw ASGI callable, no FastAPI routing, no httpx.

Per request it: takes or makes the request id, rewrites headers in one pass, refuses an
oversized body (413) before any upstream call, forwards method/path/query/body, and
streams the response back chunk by chunk (SSE and NDJSON arrive as the upstream writes
them). Small bodies with a known length are read whole (one upstream write, one client
write); anything else streams in both directions.

Failures before the response starts become problems: refused → 503, timeout → 504, other
transport errors → 502. After the response started, an upstream failure can only cut the
connection (the client sees an incomplete body, never a silently truncated "success").
A client that disconnects mid-stream cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from opentelemetry.trace import Span, StatusCode
from starlette.types import Receive, Scope, Send
from yarl import URL

from gateway.config import Settings
from gateway.core.headers import (
    UpstreamRequestHeaders,
    client_response_headers,
    upstream_request_headers,
)
from gateway.core.monitoring import (
    PROXY_IN_FLIGHT,
    PROXY_LATENCY,
    PROXY_REQUESTS,
    UPSTREAM_ERRORS,
    span_trace_id,
    span_traceparent,
    start_proxy_span,
)
from gateway.services.upstreams import UpstreamPool
from switchboard_common.body_limit import too_large_message
from switchboard_common.problems import problem_bytes
from switchboard_common.request_context import request_id_from_headers

logger = logging.getLogger("switchboard.gateway.proxy")

BUFFER_LIMIT = 1024 * 1024  # bodies up to this size with a known length are read whole
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_EMPTY_BODY = {"type": "http.response.body", "body": b"", "more_body": False}


class BodyTooLarge(Exception):
    pass


class UpstreamFailure(Exception):
    """A failure before the response started, carrying the problem to answer with."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail


class HttpProxy:
    def __init__(self, pool: UpstreamPool, settings: Settings) -> None:
        self.pool = pool
        self.max_body = settings.max_body_bytes
        self.read_timeout = settings.read_timeout_s
        self.trace = settings.trace_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send, service: str) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        request_id = request_id_from_headers(scope["headers"])
        req = upstream_request_headers(scope, request_id)
        span: Span | None = None
        if self.trace:
            span = start_proxy_span(
                f"{method} /{service}",
                req.traceparent,
                req.tracestate,
                {"http.request.method": method, "url.path": scope["path"], "peer.service": service},
            )
            traceparent = span_traceparent(span)
            if traceparent:
                req.headers.append(("traceparent", traceparent))
        elif req.traceparent:
            req.headers.append(("traceparent", req.traceparent))
        if req.tracestate:
            req.headers.append(("tracestate", req.tracestate))

        in_flight = PROXY_IN_FLIGHT.labels(service)
        in_flight.inc()
        status = 500
        try:
            status = await self._forward(scope, receive, send, service, req, request_id, span)
        finally:
            in_flight.dec()
            PROXY_LATENCY.labels(service).observe(time.perf_counter() - started)
            PROXY_REQUESTS.labels(service, method, str(status)).inc()
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
        span: Span | None,
    ) -> int:
        rid = request_id.encode()
        path: str = scope["path"]
        length: int | None = req.content_length
        if length is not None and length < 0:
            return await self._problem(
                send, 400, "Invalid Content-Length header.", scope, rid, span
            )
        if length is not None and length > self.max_body:
            start, body = too_large_message(self.max_body, path, request_id)
            await send(start)
            await send(body)
            return 413

        data: bytes | AsyncIterator[bytes] | None
        stream: RequestBodyStream | None = None
        if length is None and not req.chunked:
            data = None
        elif length is not None and length <= BUFFER_LIMIT:
            data = await self._read_body(receive)
        else:
            stream = RequestBodyStream(receive, self.max_body)
            data = stream.__aiter__()

        raw_path: bytes = scope.get("raw_path") or path.encode()
        query: bytes = scope.get("query_string", b"")
        target = self.pool.base_url(service) + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        url = URL(target, encoded=True)
        method: str = scope["method"]
        replayable = method in IDEMPOTENT and stream is None

        try:
            resp = await self._request(method, url, req.headers, data, service, replayable)
        except (BodyTooLarge, UpstreamFailure) as failure:
            if stream is not None and stream.exceeded:
                start, body = too_large_message(self.max_body, path, request_id)
                await send(start)
                await send(body)
                return 413
            assert isinstance(failure, UpstreamFailure)
            UPSTREAM_ERRORS.labels(service, failure.kind).inc()
            logger.warning(
                "upstream %s failed: %s", service, failure.kind, extra={"request_id": request_id}
            )
            headers = [(b"retry-after", b"1")] if failure.status == 503 else []
            return await self._problem(
                send, failure.status, failure.detail, scope, rid, span, headers
            )

        try:
            body_consumed = stream is None or stream.finished
            return await self._respond(resp, scope, receive, send, rid, body_consumed, service)
        finally:
            resp.release()

    async def _request(
        self,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes] | None,
        service: str,
        replayable: bool,
    ) -> aiohttp.ClientResponse:
        attempts = 2 if replayable else 1
        for attempt in range(attempts):
            try:
                return await self.pool.session.request(
                    method, url, headers=headers, data=data, allow_redirects=False
                )
            except BodyTooLarge:
                raise
            except aiohttp.ClientConnectorError as exc:
                raise UpstreamFailure(
                    503,
                    "refused",
                    f"The {service} service is unavailable (cannot connect: {exc.os_error}). "
                    "Retry shortly; if it persists, check that the service is running.",
                ) from exc
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise UpstreamFailure(
                    504,
                    "timeout",
                    f"The {service} service did not answer in time. Retry later or raise "
                    "GATEWAY_READ_TIMEOUT_S / GATEWAY_CONNECT_TIMEOUT_S.",
                ) from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the upstream had closed: safe to replay once.
                if attempt + 1 < attempts:
                    continue
                raise UpstreamFailure(
                    502, "disconnected", f"The {service} service closed the connection early."
                ) from exc
            except aiohttp.ClientError as exc:
                raise UpstreamFailure(
                    502, "protocol", f"The {service} service sent an invalid response."
                ) from exc
        raise AssertionError("unreachable")

    async def _respond(
        self,
        resp: aiohttp.ClientResponse,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        body_consumed: bool,
        service: str,
    ) -> int:
        headers, streaming, length = client_response_headers(resp.raw_headers, rid)
        no_body = scope["method"] == "HEAD" or resp.status in (204, 304)
        if no_body or (not streaming and length is not None and length <= BUFFER_LIMIT):
            try:
                body = b"" if no_body else await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                UPSTREAM_ERRORS.labels(service, "timeout").inc()
                detail = f"The {service} service stopped sending its response."
                return await self._problem(send, 504, detail, scope, rid, None)
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return resp.status

        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        pump = asyncio.ensure_future(self._pump(resp, send))
        if not body_consumed:
            await pump
            return resp.status
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        done, _ = await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if pump in done:
            watcher.cancel()
            pump.result()
        else:
            pump.cancel()
            resp.close()  # drop the upstream connection: the upstream sees the cancel
            logger.info("client went away mid-stream; upstream %s request cancelled", service)
        return resp.status

    async def _pump(self, resp: aiohttp.ClientResponse, send: Send) -> None:
        try:
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Too late for a problem: cut the connection so the client sees the failure.
            logger.warning("upstream stream failed mid-body: %s", type(exc).__name__)
            return
        await send(_EMPTY_BODY)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _problem(
        self,
        send: Send,
        status: int,
        detail: str,
        scope: Scope,
        rid: bytes,
        span: Span | None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        body = problem_bytes(
            status,
            detail=detail,
            instance=scope["path"],
            request_id=rid.decode(),
            trace_id=span_trace_id(span),
        )
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid),
            *(extra_headers or ()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status


class RequestBodyStream:
    """The client's body as an async iterator for aiohttp, cut off past ``limit`` bytes.

    aiohttp wraps errors raised while it reads the body, so ``exceeded`` tells the proxy
    afterwards that the failure was the size limit (413), not the upstream (502).
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.exceeded = False
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        total = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                return
            chunk: bytes = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                self.exceeded = True
                raise BodyTooLarge
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.finished = True
                return


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
