"""The gateway's cache of deterministic completions: L1 in front of the inference service's
L2 (policy: ``core/completion_cache.py``; docs/caching.md#gateway-completion-cache).

A hit is answered by the gateway alone — no inference call, no settlement — in **one**
Redis round trip: :data:`LOOKUP_AND_CHARGE` reads the ``models`` group's generation and the
entry and, when it is a live hit, runs the token budget's own ``RESERVE`` for the usage
stored with it, in the same script (the caller pays what it receives, and a spent budget
is a 429 before anything is served). Without a budget to charge (admins, no limits) the
lookup is one ``MGET``. A stream is replayed frame by frame, one body message each, with
the stored headers and ``X-Cache: HIT`` + ``X-Cache-Layer: gateway``.

The combined script touches a cache key and a budget key (two hash tags): it needs both on
one Redis server — they are, both live in ``GATEWAY_REDIS_URL`` — and would need splitting
back into lookup + ``TokenGate.admit(cost=…)`` (two round trips; the fallback used when the
budget's Redis is being skipped) for a Redis Cluster.

A miss is proxied as it always was — streamed live, nothing held back — while
:class:`CompletionCapture` copies the body aside (up to ``max_bytes``). Only a complete
``200`` that the inference service marked as a cache candidate (``X-Cache: MISS`` / ``HIT``)
is stored, under the generation read at lookup: a model pull/delete through the gateway
(which invalidates ``models``) in between means it is not stored, and every older entry is
dead at once. A stream the upstream cut or the client left never sends its last message,
so it is never complete and never stored.

Fails open like the GET cache (its Redis calls go through :class:`ResponseCache`): Redis
unavailable → the request is proxied and nothing is stored.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from starlette.types import Message, Scope, Send

from gateway.core.cache import Headers
from gateway.core.completion_cache import (
    COMPLETION_PATHS,
    ClientDirective,
    Finished,
    client_directive,
    completion_key,
    finished_answer,
    is_deterministic,
)
from gateway.core.headers import STREAMING_TYPES
from gateway.core.monitoring import CACHE_REQUESTS, CACHE_STORES
from gateway.core.token_limits import TokenRule
from gateway.services.cache_capture import NOT_STORED
from gateway.services.response_cache import ResponseCache
from gateway.services.token_budget import TokenBudget, TokenOutcome
from gateway.services.token_budget_script import RESERVE

logger = logging.getLogger("switchboard.gateway.cache")

LAYER = "completion"  # the ``layer`` label of the cache metrics
MODELS_TAG = "models"  # entries die with the model lists (a pull/delete changes digests)
_UPSTREAM_CANDIDATE = frozenset({b"HIT", b"MISS"})

# KEYS[1..3] the caller's budget (RESERVE's), KEYS[4] the group's generation, KEYS[5] the
# entry. ARGV[1] limit, ARGV[2] window ms, ARGV[3] charge id. An entry is
# ``<generation>\n<tokens>\n<meta>\n<frames>``; only a live one (stored under the current
# generation) is charged, for its tokens. Returns {generation|false, entry|false} on a miss,
# {generation, entry, admitted, remaining, reset ms} on a hit (RESERVE's answer).
LOOKUP_AND_CHARGE = (
    """
local gen = redis.call('GET', KEYS[4])
local entry = redis.call('GET', KEYS[5])
if not gen or not entry then return {gen or false, false} end
local stored, tokens = string.match(entry, '^([^\\n]*)\\n(%d+)\\n')
if stored ~= gen then return {gen, false} end
local ARGV = {ARGV[1], ARGV[2], tokens, tokens, ARGV[3]}  -- RESERVE's: need = charge = tokens
local function reserve()
"""
    + RESERVE
    + """
end
local r = reserve()
return {gen, entry, r[1], r[2], r[3]}
"""
)


class StoredCompletion(BaseModel):
    """An entry's metadata; the frames follow it, concatenated, in the Redis value."""

    status: int
    headers: list[tuple[str, str]]
    frames: list[int]  # byte length of each frame, in order
    streamed: bool
    tokens: int  # what every hit charges (also the value's 2nd line, for the Lua lookup)
    stored_at: float


@dataclass(frozen=True, slots=True)
class CompletionLookup:
    """One cacheable request's lookup: its key, the generation it was read under, what the
    client allows, the entry when it is a hit, and the budget's answer when the lookup
    charged it (None: the token gate still has to)."""

    digest: str
    generation: bytes
    directive: ClientDirective
    hit: tuple[StoredCompletion, bytes] | None = None
    charged: TokenOutcome | None = None

    @property
    def tokens(self) -> int | None:
        return None if self.hit is None else self.hit[0].tokens


class CompletionCache:
    def __init__(
        self, store: ResponseCache, *, ttl_s: float, max_bytes: int, tag: str = MODELS_TAG
    ) -> None:
        self.store = store
        self.lookup_and_charge = store.redis.register_script(LOOKUP_AND_CHARGE)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.tag = tag
        if not any(g.tag == tag and g.invalidated_by for g in store.policy.groups):
            logger.warning(
                "no cache group %r with invalidated_by: cached completions survive model "
                "pulls/deletes until their TTL (see docs/caching.md)",
                tag,
            )

    @staticmethod
    def applies(scope: Scope) -> bool:
        """Whether the request is on a cached route at all (a set lookup: other routes pay
        nothing else)."""
        return scope["path"] in COMPLETION_PATHS and scope["method"] == "POST"

    def bypass(self) -> None:
        """Count a request the caller already knows is not deterministic (what
        :meth:`lookup` would have counted for it)."""
        CACHE_REQUESTS.labels("bypass", LAYER).inc()

    async def lookup(
        self,
        scope: Scope,
        body: bytes,
        budget: TokenBudget | None = None,
        rule: TokenRule | None = None,
    ) -> CompletionLookup | None:
        """The lookup of a request on a cached route whose body the gateway holds; None when
        the cache stays out of it (not deterministic, ``no-store``, Redis unavailable).
        With a ``budget`` and the caller's ``rule``, a hit is charged in the same call."""
        directive, accept = client_directive(scope["headers"])
        path: str = scope["path"]
        if not directive.store or not is_deterministic(path, body):
            CACHE_REQUESTS.labels("bypass", LAYER).inc()
            return None
        digest = completion_key(path, accept, body)
        if budget is not None and rule is not None and directive.lookup and budget.available:
            return await self._lookup_and_charge(digest, directive, budget, rule)
        fetched = await self.store.fetch(self.tag, self._key(digest))
        if fetched is None:
            CACHE_REQUESTS.labels("unavailable", LAYER).inc()
            return None
        generation, raw = fetched
        if directive.lookup and generation:
            entry = _decode(raw, generation)
            if entry is not None:
                CACHE_REQUESTS.labels("hit", LAYER).inc()
                return CompletionLookup(digest, generation, directive, entry)
        CACHE_REQUESTS.labels("miss" if directive.lookup else "refresh", LAYER).inc()
        return CompletionLookup(digest, generation, directive)

    def _key(self, digest: str) -> str:
        return self.store.entry_key(self.tag, digest, kind="c")

    async def _lookup_and_charge(
        self, digest: str, directive: ClientDirective, budget: TokenBudget, rule: TokenRule
    ) -> CompletionLookup | None:
        window_ms = int(rule.limit.window_s * 1000)
        keys = [*budget.reserve_keys(rule.key), self.store.gen_key(self.tag), self._key(digest)]
        args: list[str | int] = [rule.limit.count, window_ms, secrets.token_urlsafe(12)]

        async def run() -> list[object]:
            result: list[object] = await self.lookup_and_charge(keys=keys, args=args)
            return result

        result = await self.store.read(run)
        if result is None:
            CACHE_REQUESTS.labels("unavailable", LAYER).inc()
            return None
        generation = result[0] if isinstance(result[0], bytes) else b""
        if len(result) < 5:
            CACHE_REQUESTS.labels("miss", LAYER).inc()
            return CompletionLookup(digest, generation, directive)
        entry = _decode(result[1] if isinstance(result[1], bytes) else None, generation)
        admitted, remaining, reset_ms = (int(str(v)) for v in result[2:5])
        if entry is None:  # unreadable, yet charged: rare enough to leave the charge
            CACHE_REQUESTS.labels("miss", LAYER).inc()
            return CompletionLookup(digest, generation, directive)
        outcome = budget.charged(rule.limit, admitted, remaining, reset_ms, entry[0].tokens)
        CACHE_REQUESTS.labels("hit" if outcome.allowed else "denied", LAYER).inc()
        return CompletionLookup(digest, generation, directive, entry, outcome)

    async def serve(
        self, lookup: CompletionLookup, scope: Scope, send: Send, extra: Headers
    ) -> None:
        """Answer a hit: the stored status and headers, then the frames as they streamed."""
        assert lookup.hit is not None
        meta, body = lookup.hit
        rid: str = scope.get("switchboard.request_id", "")
        headers: Headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta.headers]
        if meta.streamed:
            headers.append((b"x-accel-buffering", b"no"))
        else:
            headers.append((b"content-length", b"%d" % len(body)))
        headers += [
            (b"x-cache", b"HIT"),
            (b"x-cache-layer", b"gateway"),
            (b"age", b"%d" % max(0, int(time.time() - meta.stored_at))),
            (b"x-request-id", rid.encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": meta.status, "headers": headers})
        if not meta.streamed:
            await send({"type": "http.response.body", "body": body})
            return
        offset = 0
        for length in meta.frames:
            frame = body[offset : offset + length]
            offset += length
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def capture(self, send: Send, extra: Headers) -> CompletionCapture:
        return CompletionCapture(send, self.max_bytes, {name for name, _ in extra})

    async def keep(self, lookup: CompletionLookup, capture: CompletionCapture) -> None:
        """Store a miss's answer when it is complete and storable."""
        if not lookup.directive.store:
            return
        reason = capture.unstorable()
        if reason is not None:
            if reason != "not_candidate":  # a refusal or non-deterministic answer: expected
                CACHE_STORES.labels(reason, LAYER).inc()
            return
        finished = finished_answer(capture.content_type, b"".join(capture.chunks), capture.streamed)
        if not isinstance(finished, Finished):
            CACHE_STORES.labels(finished, LAYER).inc()
            return
        meta = StoredCompletion(
            status=capture.status,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in capture.stored],
            frames=[len(f) for f in finished.frames],
            streamed=capture.streamed,
            tokens=finished.tokens,
            stored_at=time.time(),
        )
        value = b"%d\n" % finished.tokens + meta.model_dump_json().encode() + b"\n"
        value += b"".join(finished.frames)
        result = await self.store.put(
            self.tag, self._key(lookup.digest), lookup.generation, value, self.ttl_s
        )
        CACHE_STORES.labels(
            "unavailable" if result is None else "stored" if result else "invalidated", LAYER
        ).inc()


class CompletionCapture:
    """Wraps ``send`` of a proxied completion: passes every message through at once (a
    stream stays live), copies the body aside while it fits ``max_bytes``, and notes whether
    the answer is a complete ``200`` the inference service offered for caching."""

    __slots__ = (
        "candidate",
        "chunks",
        "complete",
        "content_type",
        "extra_names",
        "max_bytes",
        "send_",
        "size",
        "status",
        "stored",
        "streamed",
    )

    def __init__(self, send: Send, max_bytes: int, extra_names: set[bytes]) -> None:
        self.send_ = send
        self.max_bytes = max_bytes
        self.extra_names = extra_names  # this request's own headers (budget): not stored
        self.status = 0
        self.candidate = False
        self.streamed = False
        self.content_type = b""
        self.stored: Headers = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            message = self._start(message)
        elif message["type"] == "http.response.body":
            chunk: bytes = message.get("body", b"")
            if self.size <= self.max_bytes and chunk:
                self.size += len(chunk)
                self.chunks.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
        await self.send_(message)

    def _start(self, message: Message) -> Message:
        self.status = message["status"]
        upstream_cache = b""
        stored: Headers = []
        for name, value in message.get("headers", []):
            if name == b"x-cache":
                upstream_cache = value
            elif name == b"content-type":
                self.content_type = value
                self.streamed = value.startswith(STREAMING_TYPES)
            if name not in NOT_STORED and name not in self.extra_names:
                stored.append((name, value))
        self.stored = stored
        self.candidate = upstream_cache in _UPSTREAM_CANDIDATE
        if upstream_cache == b"HIT":  # say which layer answered
            headers = [*message.get("headers", []), (b"x-cache-layer", b"inference")]
            return dict(message, headers=headers)
        return message

    def unstorable(self) -> str | None:
        """Why the captured answer cannot be stored (None: it can, pending its content)."""
        if self.status != 200 or not self.candidate:
            return "not_candidate"
        if not self.complete:
            return "incomplete"
        if self.size > self.max_bytes:
            return "too_large"
        return None


def _decode(raw: bytes | None, generation: bytes) -> tuple[StoredCompletion, bytes] | None:
    """The entry if it was stored under ``generation``; None when absent, stale or corrupt."""
    if raw is None:
        return None
    gen, _, rest = raw.partition(b"\n")
    if gen != generation:
        return None
    _tokens, _, rest = rest.partition(b"\n")
    meta, _, body = rest.partition(b"\n")
    try:
        stored = StoredCompletion.model_validate_json(meta)
    except ValidationError:
        logger.warning("unreadable completion cache entry ignored")
        return None
    if sum(stored.frames) != len(body):
        logger.warning("truncated completion cache entry ignored")
        return None
    return stored, body
