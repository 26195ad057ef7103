"""``send`` wrappers of the response cache (``services/response_cache.py``) around the proxy.

``Invalidating`` (writes, and reads the cache does not serve): strips the upstream's
``Switchboard-Cache-Invalidate`` header and invalidates just before the last body message,
so the client never has the whole answer before the invalidation is in Redis.
``Capture`` (cache misses): holds a storable answer until its body is complete, so the
ETag (computed from the body when the upstream sent none) goes out with it, and a
matching ``If-None-Match`` can still become a 304.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.types import Message, Send

from gateway.core.cache import (
    VARY_REQUEST_HEADERS,
    CacheControl,
    CacheGroup,
    CacheRequest,
    Headers,
    parse_cache_control,
    parse_invalidate_header,
    strong_etag,
    valid_etag,
)
from gateway.core.headers import STREAMING_TYPES
from gateway.core.monitoring import CACHE_STORES

Invalidate = Callable[[set[str], str], Awaitable[None]]

INVALIDATE_HEADER = b"switchboard-cache-invalidate"
# Per-response headers: never stored, set afresh on every answer.
NOT_STORED = frozenset(
    {
        b"content-length",
        b"x-request-id",
        b"x-cache",
        b"age",
        b"etag",
        b"date",
        b"x-accel-buffering",
        INVALIDATE_HEADER,
    }
)
# What a 304 carries (RFC 9110 §15.4.5), besides the gateway's own headers.
NOT_MODIFIED_KEEP = frozenset({b"cache-control", b"content-location", b"expires", b"vary"})


@dataclass(slots=True)
class Invalidating:
    """Wraps ``send`` of a proxied response: strips and collects the upstream's invalidation
    header, and invalidates (a 2xx → ``tags`` too) just before the last body message."""

    invalidate: Invalidate
    send_: Send
    tags: tuple[str, ...]
    mark_miss: bool = False
    status: int = 0
    named: set[str] = field(default_factory=set)
    done: bool = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message = dict(message, headers=self.take_headers(message.get("headers", [])))
        elif not message.get("more_body", False):
            await self.flush()
        await self.send_(message)

    def take_headers(self, headers: Headers) -> Headers:
        out: Headers = []
        for name, value in headers:
            if name == INVALIDATE_HEADER:
                self.named.update(parse_invalidate_header(value))
            elif not (self.mark_miss and name == b"x-cache"):
                out.append((name, value))
        if self.mark_miss:
            out.append((b"x-cache", b"MISS"))
        return out

    async def flush(self) -> None:
        if self.done or not self.status:
            return
        self.done = True
        tags = set(self.named)
        if 200 <= self.status < 300:
            tags.update(self.tags)
        if tags:
            await self.invalidate(tags, "write" if not self.named else "header")


class Capture:
    """Wraps ``send`` of a cache miss: holds a storable 200 until its body is complete, adds
    the ETag and ``X-Cache: MISS``, answers 304 when the client's validator matches, and
    keeps what the cache will store. Anything else passes through at once."""

    def __init__(
        self,
        invalidate: Invalidate,
        send: Send,
        req: CacheRequest,
        *,
        is_get: bool,
        max_bytes: int,
        extra: Headers,
    ) -> None:
        self.max_bytes = max_bytes
        self.send_ = send
        self.req = req
        self.is_get = is_get
        self.extra_names = {name for name, _ in extra}
        self.invalidations = Invalidating(invalidate, send, ())
        self.status = 0
        self.start: Message | None = None  # held while buffering
        self.chunks: list[bytes] = []
        self.size = 0
        self.etag = b""
        self.control: CacheControl | None = None
        self.stored: Headers = []
        self.body: bytes | None = None  # set when complete and storable

    def ttl_s(self, group: CacheGroup, *, shared: bool) -> float | None:
        control = self.control
        assert control is not None
        limit = control.s_maxage if shared and control.s_maxage is not None else control.max_age
        ttl = group.ttl_s if limit is None else min(group.ttl_s, limit)
        if ttl <= 0:
            CACHE_STORES.labels("max_age", "get").inc()
            return None
        return ttl

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._start(message)
            return
        if self.start is None:  # passing through
            if not message.get("more_body", False):
                await self.invalidations.flush()
            await self.send_(message)
            return
        chunk: bytes = message.get("body", b"")
        self.size += len(chunk)
        self.chunks.append(chunk)
        if self.size > self.max_bytes:  # the upstream sent more than it announced
            CACHE_STORES.labels("too_large", "get").inc()
            start, self.start = self.start, None
            if not message.get("more_body", False):
                await self.invalidations.flush()
            await self.send_(start)
            await self.send_(dict(message, body=b"".join(self.chunks)))
            return
        if not message.get("more_body", False):
            await self._complete(self.start)

    async def _start(self, message: Message) -> None:
        self.status = message["status"]
        self.invalidations.status = self.status
        headers = self.invalidations.take_headers(message.get("headers", []))
        reason, upstream_etag = self._unstorable(headers)
        headers = [h for h in headers if h[0] != b"x-cache"] + [(b"x-cache", b"MISS")]
        message = dict(message, headers=headers)
        if reason is not None:
            CACHE_STORES.labels(reason, "get").inc()
            await self.send_(message)
            return
        self.etag = upstream_etag or b""
        self.start = message

    def _unstorable(self, headers: Headers) -> tuple[str | None, bytes | None]:
        """Why this response cannot be stored (None: it can), and the upstream's ETag."""
        length: int | None = None
        streaming = cookie = bad_vary = False
        control: list[bytes] = []
        etag: bytes | None = None
        for name, value in headers:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                streaming = value.startswith(STREAMING_TYPES)
            elif name == b"cache-control":
                control.append(value)
            elif name == b"set-cookie":
                cookie = True
            elif name == b"vary":
                names = {v.strip().lower() for v in value.split(b",")}
                bad_vary = bool(names - set(VARY_REQUEST_HEADERS) - {b""})
            elif name == b"etag" and valid_etag(value):
                etag = value
        self.control = parse_cache_control(control)
        if self.status != 200 or not self.is_get:
            return "not_ok", etag
        if streaming or length is None:
            return "streaming", etag
        if length > self.max_bytes:
            return "too_large", etag
        if self.control.no_store or self.control.no_cache or self.control.invalid:
            return "no_store", etag
        if cookie:
            return "set_cookie", etag
        if bad_vary:
            return "vary", etag
        return None, etag

    async def _complete(self, start: Message) -> None:
        body = b"".join(self.chunks)
        etag = self.etag or strong_etag(body)
        self.etag = etag
        headers: Headers = [h for h in start["headers"] if h[0] != b"etag"]
        headers.append((b"etag", etag))
        self.stored = [
            h for h in headers if h[0] not in NOT_STORED and h[0] not in self.extra_names
        ]
        self.body = body
        await self.invalidations.flush()
        inm = self.req.if_none_match
        if inm is not None and inm.matches(etag):
            kept = {b"etag", b"x-cache", b"x-request-id"} | NOT_MODIFIED_KEEP | self.extra_names
            headers = [h for h in headers if h[0] in kept]
            await self.send_({"type": "http.response.start", "status": 304, "headers": headers})
            await self.send_({"type": "http.response.body", "body": b""})
            return
        await self.send_(dict(start, headers=headers))
        await self.send_({"type": "http.response.body", "body": body})
