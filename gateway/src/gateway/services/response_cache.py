"""The gateway's GET response cache in Redis, shared by every replica (policy: ``core/cache.py``).

Reads (GET/HEAD on a cached route): one ``MGET`` fetches the group's generation and the
entry; an entry stored under another generation is stale and never served. A hit is
answered without the upstream (``X-Cache: HIT``, ``Age``, ``ETag``), or 304 when the
client's ``If-None-Match`` matches. A miss is proxied with the client's conditional headers
removed (so the upstream always gives a full 200 to keep), held until its body is complete
(bounded by ``max_bytes``), given an ETag, answered (304 if it matches) and then stored —
by a script that stores only if the generation is still the one read before the upstream
was asked, so a response that may predate a write is never kept.

Writes (POST/PUT/PATCH/DELETE): a 2xx on a path of a group's ``invalidated_by`` replaces the
group's generation (one SET per tag; every replica sees it at its next read), and so does
an upstream's ``Switchboard-Cache-Invalidate: tag, …`` header (stripped from the response).
Both happen before the client gets the last byte, so a client that reads after its write
completes never sees the old answer. A generation is a random token, not a counter: if
Redis loses the key, the next one cannot collide with an old entry's.

Fails open: Redis errors or no answer within ``timeout_s`` → the request is proxied as if
nothing were cached (``X-Cache: MISS``), ``switchboard_gateway_cache_fail_open_total``
counts it, and Redis is skipped for ``retry_s``. An invalidation that could not be written
is kept and written before this replica's next lookup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from gateway.core.cache import CacheGroup, CachePolicy, CacheRequest, Headers, resource_key
from gateway.core.monitoring import (
    CACHE_FAIL_OPEN,
    CACHE_INVALIDATIONS,
    CACHE_REQUESTS,
    CACHE_STORES,
)
from gateway.services.cache_capture import NOT_MODIFIED_KEEP, Capture, Invalidating
from gateway.services.redis_guard import RedisGuard
from switchboard_common.identity import Principal

logger = logging.getLogger("switchboard.gateway.cache")

Forward = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

LAYER = "get"  # the ``layer`` label of the cache metrics (``completion``: the other cache)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# KEYS[1] generation, KEYS[2] entry. ARGV[1] generation read before the upstream was asked
# ('' = none yet), ARGV[2] a fresh generation in case there is none, ARGV[3] TTL (ms),
# ARGV[4] the entry. Stores only when no invalidation happened since the lookup.
STORE = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  if ARGV[1] ~= '' then return 0 end
  gen = ARGV[2]
  redis.call('SET', KEYS[1], gen)
elseif gen ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], gen .. '\\n' .. ARGV[4], 'PX', ARGV[3])
return 1
"""


class StoredResponse(BaseModel):
    """An entry's metadata (the body follows it in the Redis value)."""

    status: int
    headers: list[tuple[str, str]]
    etag: str
    stored_at: float


@dataclass(frozen=True, slots=True)
class CachePlan:
    """What the cache does with one request: serve/store (``group``) or invalidate."""

    group: CacheGroup | None
    tags: tuple[str, ...] = ()


def _owner(principal: Principal | None) -> str:
    """Whose entries: a user's tokens and API keys see the same data, so they share."""
    if principal is None:
        return "anonymous"
    return f"{'service' if principal.kind == 'service' else 'user'}:{principal.sub}"


class ResponseCache:
    def __init__(
        self,
        redis: Redis,
        policy: CachePolicy,
        *,
        max_bytes: int,
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        prefix: str = "gw:cache:",
    ) -> None:
        self.redis = redis
        self.store_script = redis.register_script(STORE)
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.guard = RedisGuard("response cache bypassed", retry_s)
        self._pending: set[str] = set()  # invalidations Redis has not taken yet
        # plans are immutable: built once, so planning allocates nothing per request
        self._read_plans = {g.tag: CachePlan(g) for g in policy.groups}
        self._write_plans: dict[tuple[str, ...], CachePlan] = {}

    def plan(self, method: str, path: str) -> CachePlan | None:
        """None when the cache has nothing to do with the request (one memo lookup)."""
        if method == "GET" or method == "HEAD":
            group = self.policy.group_for(path)
            return None if group is None else self._read_plans[group.tag]
        if method in WRITE_METHODS:
            tags = self.policy.tags_invalidated_by(path)
            plan = self._write_plans.get(tags)
            if plan is None:
                plan = self._write_plans[tags] = CachePlan(None, tags)
            return plan
        return None

    async def handle(
        self,
        plan: CachePlan,
        scope: Scope,
        receive: Receive,
        send: Send,
        forward: Forward,
        service: str,
        principal: Principal | None,
        extra_headers: Headers,
    ) -> None:
        if plan.group is None:
            writer = Invalidating(self.invalidate, send, plan.tags)
            try:
                await forward(scope, receive, writer.send)
            finally:
                await writer.flush()
            return
        await self._read(
            plan.group, scope, receive, send, forward, service, principal, extra_headers
        )

    # --- keys and Redis -----------------------------------------------------------------

    def gen_key(self, tag: str) -> str:
        return f"{self.prefix}{{{tag}}}:gen"  # {tag}: one Redis Cluster slot per group

    def entry_key(self, tag: str, digest: str, kind: str = "e") -> str:
        """An entry of group ``tag``: ``e`` GET responses, ``c`` completions (the completion
        cache keeps its entries in the ``models`` group's slot, under its generation)."""
        return f"{self.prefix}{{{tag}}}:{kind}:{digest}"

    async def fetch(self, tag: str, key: str) -> tuple[bytes, bytes | None] | None:
        """The group's generation (``b""``: none yet) and the raw entry at ``key``, in one
        ``MGET``; None when Redis is unavailable."""
        values = await self._lookup([self.gen_key(tag), key])
        if values is None:
            return None
        return values[0] or b"", values[1]

    async def put(
        self, tag: str, key: str, generation: bytes, value: bytes, ttl_s: float
    ) -> bool | None:
        """Store ``value`` at ``key`` if ``tag``'s generation is still ``generation`` (the
        one read before the upstream was asked). True stored, False raced an invalidation,
        None Redis unavailable."""

        async def store() -> int:
            stored: int = await self.store_script(
                keys=[self.gen_key(tag), key],
                args=[generation, os.urandom(9).hex(), int(ttl_s * 1000), value],
            )
            return stored

        result = await self._ask(store)
        return None if result is None else bool(result)

    async def _ask(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call``'s result, or None when Redis is skipped, fails or is slow (fail open)."""
        now = time.monotonic()
        if self.guard.skipping(now):
            CACHE_FAIL_OPEN.inc()
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self.guard.failed(exc, now)
            CACHE_FAIL_OPEN.inc()
            return None

    async def invalidate(self, tags: set[str], source: str) -> None:
        """Give each tag a fresh generation; kept for later when Redis cannot take it now."""
        tags = tags | self._pending
        if not tags:
            return

        async def write() -> bool:
            async with self.redis.pipeline(transaction=False) as pipe:
                for tag in sorted(tags):
                    pipe.set(self.gen_key(tag), os.urandom(9).hex())
                await pipe.execute()
            return True

        if await self._ask(write):
            # only what this call wrote: another call may have deferred tags meanwhile
            self._pending -= tags
            CACHE_INVALIDATIONS.labels(source).inc(len(tags))
        else:
            CACHE_INVALIDATIONS.labels("deferred").inc(len(tags - self._pending))
            self._pending |= tags

    async def _lookup(self, keys: list[str]) -> list[bytes | None] | None:
        async def mget() -> list[bytes | None]:
            values = await self.redis.mget(keys)  # the client does not decode responses
            return [v.encode() if isinstance(v, str) else v for v in values]

        return await self.read(mget)

    async def read(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call`` (a read of entries), or None when Redis is unavailable or an
        invalidation this replica could not write is still pending."""
        if self._pending:
            await self.invalidate(set(), "deferred_write")
            if self._pending:
                return None  # never serve what a lost invalidation should have removed
        return await self._ask(call)

    # --- reads --------------------------------------------------------------------------

    async def _read(
        self,
        group: CacheGroup,
        scope: Scope,
        receive: Receive,
        send: Send,
        forward: Forward,
        service: str,
        principal: Principal | None,
        extra_headers: Headers,
    ) -> None:
        req = CacheRequest.parse(scope["headers"])
        if req.control.no_store:
            CACHE_REQUESTS.labels("bypass", LAYER).inc()
            await self._forward_uncached(scope, receive, send, forward)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        owners = ["public" if group.public else _owner(principal)]
        if group.public and principal is not None:
            owners.append(_owner(principal))  # where a `private` answer would be kept
        digests = [resource_key(service, raw_path, query, req.vary, o) for o in owners]
        values = await self._lookup(
            [self.gen_key(group.tag)] + [self.entry_key(group.tag, d) for d in digests]
        )
        if values is None:
            CACHE_REQUESTS.labels("unavailable", LAYER).inc()
            await self._forward_uncached(scope, receive, send, forward)
            return
        generation = values[0] or b""
        if not req.control.no_cache and generation:
            for raw in values[1:]:
                entry = _decode(raw, generation, req.control.max_age)
                if entry is not None:
                    await self._serve_hit(entry, req, scope, send, extra_headers)
                    return
        CACHE_REQUESTS.labels("refresh" if req.control.no_cache else "miss", LAYER).inc()
        capture = Capture(
            self.invalidate,
            send,
            req,
            is_get=scope["method"] == "GET",
            max_bytes=self.max_bytes,
            extra=extra_headers,
        )
        upstream_scope = dict(scope, headers=req.upstream_headers)
        try:
            await forward(upstream_scope, receive, capture.send)
        finally:
            await capture.invalidations.flush()
        if capture.body is None or capture.control is None:
            return
        ttl = capture.ttl_s(group, shared=group.public and not capture.control.private)
        if ttl is None:
            return
        if capture.control.private and group.public:
            if principal is None:
                CACHE_STORES.labels("private", LAYER).inc()
                return
            digest = digests[1]
        else:
            digest = digests[0]
        await self._store(group.tag, digest, generation, capture, ttl)

    async def _store(
        self, tag: str, digest: str, generation: bytes, capture: Capture, ttl_s: float
    ) -> None:
        meta = StoredResponse(
            status=capture.status,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in capture.stored],
            etag=capture.etag.decode("latin-1"),
            stored_at=time.time(),
        )
        value = meta.model_dump_json().encode() + b"\n" + (capture.body or b"")
        result = await self.put(tag, self.entry_key(tag, digest), generation, value, ttl_s)
        CACHE_STORES.labels(
            "unavailable" if result is None else "stored" if result else "invalidated", LAYER
        ).inc()

    async def _serve_hit(
        self, entry: _Entry, req: CacheRequest, scope: Scope, send: Send, extra: Headers
    ) -> None:
        meta, body = entry
        etag = meta.etag.encode("latin-1")
        rid: str = scope.get("switchboard.request_id", "")
        own: Headers = [
            (b"etag", etag),
            (b"x-cache", b"HIT"),
            (b"age", b"%d" % max(0, int(time.time() - meta.stored_at))),
            (b"x-request-id", rid.encode()),
            *extra,
        ]
        stored = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta.headers]
        if req.if_none_match is not None and req.if_none_match.matches(etag):
            CACHE_REQUESTS.labels("revalidated", LAYER).inc()
            headers = [h for h in stored if h[0] in NOT_MODIFIED_KEEP] + own
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        CACHE_REQUESTS.labels("hit", LAYER).inc()
        headers = [*stored, (b"content-length", b"%d" % len(body)), *own]
        await send({"type": "http.response.start", "status": meta.status, "headers": headers})
        get = scope["method"] == "GET"
        await send({"type": "http.response.body", "body": body if get else b""})

    async def _forward_uncached(
        self, scope: Scope, receive: Receive, send: Send, forward: Forward
    ) -> None:
        """Proxy as if the route were not cached, but still marked ``X-Cache: MISS`` and
        with an upstream's invalidation header applied and stripped."""
        writer = Invalidating(self.invalidate, send, (), mark_miss=True)
        try:
            await forward(scope, receive, writer.send)
        finally:
            await writer.flush()


_Entry = tuple[StoredResponse, bytes]


def _decode(raw: bytes | None, generation: bytes, max_age: int | None) -> _Entry | None:
    """The entry if it was stored under ``generation`` (and, when the client sent
    ``Cache-Control: max-age``, is no older); None when absent, stale or corrupt."""
    if raw is None:
        return None
    gen, _, rest = raw.partition(b"\n")
    if gen != generation:
        return None
    meta, _, body = rest.partition(b"\n")
    try:
        stored = StoredResponse.model_validate_json(meta)
    except ValidationError:
        logger.warning("unreadable cache entry ignored")
        return None
    if max_age is not None and time.time() - stored.stored_at > max_age:
        return None
    return stored, body
