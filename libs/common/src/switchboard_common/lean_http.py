"""A lean HTTP/1.1 client for hot paths: asyncio Protocol + httptools' C parser.

Used by the gateway's proxy and by the inference service's Ollama streams (the two paths
where a client's per-request cost shows in every response).

Why not aiohttp or httpx there: measured on this machine a minimal uvicorn + aiohttp proxy
spends ~330 µs CPU per request where uvicorn itself needs ~60 µs; nearly all of the rest is the
client's per-request machinery (request/response objects, timers, stream readers). This
client does per request: one ``transport.write`` (head and small body together), one C
parse of the answer, and no task creation. aiohttp remains for WebSockets and health checks.

Scope, deliberately small: one request at a time per connection (no pipelining), keep-alive
pooling per upstream, bodies as bytes or an async iterator (sent chunked), responses with
Content-Length, chunked or close-delimited bodies, flow control both ways. HEAD responses
close their connection (the parser cannot be told the request had no body).

Errors (all subclasses of :class:`UpstreamError`)::

    UpstreamError
    ├── UpstreamConnectError   could not connect (refused, unreachable, connect timeout)
    ├── UpstreamTimeout        no bytes within the read timeout (before or between chunks)
    └── UpstreamDisconnected   connection closed or reset before the response completed;
                               ``before_response`` tells whether any response byte came
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools

MAX_BUFFERED = 1024 * 1024  # pause reading from the upstream past this many unread bytes


class UpstreamError(Exception):
    pass


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamDisconnected(UpstreamError):
    def __init__(self, message: str, *, before_response: bool) -> None:
        super().__init__(message)
        self.before_response = before_response


class UpstreamResponse:
    """One response: status and headers first, then the body as it arrives."""

    __slots__ = (
        "_conn",
        "_waiter",
        "body_done",
        "buffered",
        "chunks",
        "error",
        "headers",
        "headers_done",
        "status",
    )

    def __init__(self, conn: UpstreamConnection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.body_done = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout_s: float) -> None:
        self._waiter = self._conn.loop.create_future()
        try:
            async with asyncio.timeout(timeout_s):
                await self._waiter
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no data from upstream within {timeout_s:g}s") from exc
        finally:
            self._waiter = None

    async def read_headers(self, timeout_s: float) -> None:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout_s)

    async def iter_body(self, timeout_s: float) -> AsyncIterator[bytes]:
        """Chunks as they arrive; the read timeout applies to each gap, not the total."""
        conn = self._conn
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if conn.reading_paused and self.buffered < MAX_BUFFERED // 2:
                    conn.resume_reading()
                yield chunk
            elif self.body_done:
                return
            elif self.error is not None:
                raise self.error
            else:
                await self._wait(timeout_s)

    async def read(self, timeout_s: float) -> bytes:
        if self.body_done and len(self.chunks) <= 1:  # the common case: all already here
            body = self.chunks.popleft() if self.chunks else b""
            self.buffered = 0
            return body
        parts = [chunk async for chunk in self.iter_body(timeout_s)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def complete(self) -> bool:
        return self.body_done and not self.chunks


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive TCP connection to an upstream, one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.reusable = False
        self.reading_paused = False
        self.got_bytes = False
        self.idle_since = 0.0
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_paused = False

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the Transport interface without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(
                UpstreamDisconnected(f"invalid HTTP from upstream: {exc}", before_response=False)
            )
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        response = self.response
        if response is not None and not response.body_done:
            if response.headers_done and exc is None and not self._has_length:
                response.body_done = True  # close-delimited body: EOF ends it
                response._wake()
            else:
                self._fail(
                    UpstreamDisconnected(
                        "upstream closed the connection", before_response=not self.got_bytes
                    )
                )
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks --------------------------------------------------------------
    _has_length = False

    def on_message_begin(self) -> None:
        self._has_length = False

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        if response is not None:
            lname = name.lower()
            if lname == b"content-length" or lname == b"transfer-encoding":
                self._has_length = True
            response.headers.append((lname, value))

    _informational = False

    def on_headers_complete(self) -> None:
        response = self.response
        if response is not None:
            status = self.parser.get_status_code()
            if 100 <= status < 200 and status != 101:
                # an interim answer (100 Continue, 103 Early Hints): the real one follows
                response.headers.clear()
                self._informational = True
                return
            response.status = status
            response.headers_done = True
            response._wake()

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:
            response.chunks.append(body)
            response.buffered += len(body)
            if response.buffered > MAX_BUFFERED and not self.reading_paused:
                self.pause_reading()
            response._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        response = self.response
        if response is not None:
            response.body_done = True
            self.reusable = self.parser.should_keep_alive()
            response._wake()

    # --- use ------------------------------------------------------------------------------
    def _fail(self, error: UpstreamError) -> None:
        response = self.response
        if response is not None and response.error is None:
            response.error = error
            response._wake()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.reading_paused = False

    def start(self, head: bytes, body: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.response = UpstreamResponse(self)
        self.reusable = False
        self.got_bytes = False
        self.transport.write(head + body if body else head)
        return self.response

    async def write(self, data: bytes, timeout_s: float) -> None:
        """Write with backpressure (for streamed request bodies); an upstream that stops
        reading for ``timeout_s`` is a timeout, not a hang."""
        if self.closed or self.transport is None:
            raise UpstreamDisconnected("upstream closed the connection", before_response=False)
        self.transport.write(data)
        if self._write_paused:
            self._write_waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._write_waiter
            except TimeoutError as exc:
                raise UpstreamTimeout(f"upstream read nothing for {timeout_s:g}s") from exc
            finally:
                self._write_waiter = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamClient:
    """Keep-alive connections to one upstream (``host:port``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        keepalive_s: float,
        max_idle: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode()
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._idle: deque[UpstreamConnection] = deque()

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamConnection(loop), self.host, self.port
                )
        except TimeoutError as exc:
            raise UpstreamConnectError(
                f"connect timed out after {self.connect_timeout_s:g}s"
            ) from exc
        except OSError as exc:
            raise UpstreamConnectError(exc.strerror or str(exc)) from exc
        return protocol

    def idle_connection(self) -> UpstreamConnection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # most recently used first: the warmest socket
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    def release(self, conn: UpstreamConnection, response: UpstreamResponse) -> None:
        """Back to the pool when the exchange finished cleanly, else closed."""
        conn.response = None
        if (
            conn.reusable
            and response.complete
            and not conn.closed
            and len(self._idle) < self.max_idle
        ):
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def head(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], framing: bytes
    ) -> bytes:
        parts = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (framing, b"\r\n")
        return b"".join(parts)

    async def request(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float,
    ) -> tuple[int, bytes]:
        """One whole exchange with a small answer: ``(status, body)``. A pooled connection
        that turns out stale (closed before any response byte) is retried once on a fresh
        one; any other failure raises an :class:`UpstreamError`."""
        conn = self.idle_connection()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self.connect()
            framing = b"content-length: %d\r\n" % len(body)
            response = conn.start(self.head(method, target, headers, framing), body)
            try:
                await response.read_headers(timeout_s)
                data = await response.read(timeout_s)
            except UpstreamDisconnected as exc:
                conn.close()
                if not (reused and exc.before_response):
                    raise
                conn, reused = None, False
                continue
            except BaseException:
                conn.close()
                raise
            self.release(conn, response)
            return response.status, data

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
