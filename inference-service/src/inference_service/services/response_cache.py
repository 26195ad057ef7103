"""Response cache for deterministic completions (docs/caching.md).

A generation is *deterministic* when ``options.temperature == 0`` or ``options.seed`` is
set. Its answer is stored once, wire-format neutral — the text pieces as they streamed plus
the final Ollama stats chunk — and replayed as Ollama-shaped chunks, so native, /v1 and
/api render a hit exactly like a miss (streams stay streams, chunk by chunk).

Redis layout (keys owned by this service)::

    inference:cache:{sha256}   string  JSON {"v": 1, "pieces": [...], "final": {...}}  (TTL)

The key hashes the kind (chat/generate), the model name (``name:tag``), the digests of the
model on every reachable backend that lists it (a re-pulled model gets a new key), and the
request body minus the fields that do not change the output (``model``, ``stream``,
``keep_alive``, ``priority``), serialised with sorted keys. Users share entries: the
answer depends on the request only.

Cache errors never fail a request: a Redis problem is a miss / a skipped store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from inference_service.services.backends import BackendPool
from inference_service.services.model_names import normalize_model
from inference_service.services.token_settlement import charge_reserved_usage
from inference_service.services.usage import UsageLedger

logger = logging.getLogger("inference.cache")

KEY_PREFIX = "inference:cache:"
ENTRY_VERSION = 1
IGNORED_FIELDS = frozenset({"model", "stream", "keep_alive", "priority"})
NOT_ANSWERS = frozenset({"load", "unload"})  # empty-prompt load/unload, not a completion
PLAIN_MESSAGE_KEYS = frozenset({"role", "content"})

CacheStatus = Literal["HIT", "MISS", "BYPASS"]
JsonDict = dict[str, Any]

CACHE_EVENTS = Counter(
    "switchboard_inference_response_cache_total",
    "Response cache outcomes: hit, miss (looked up, not found), bypass (not deterministic "
    "or Cache-Control opt-out), stored, skipped (not storable: too large, failed, tool calls).",
    ("result",),
)
_BYPASSED = CACHE_EVENTS.labels("bypass")  # every non-deterministic generation: looked up once
CACHED_TOKENS = Counter(
    "switchboard_inference_cached_tokens_total",
    "Tokens served from the response cache (no backend time), by model and kind.",
    ("model", "kind"),
)


@dataclass(frozen=True)
class CacheDirective:
    """What the client allows: ``lookup`` (serve from cache) and ``store`` (write to it)."""

    lookup: bool = True
    store: bool = True

    @classmethod
    def from_header(cls, value: str | None) -> CacheDirective:
        """``Cache-Control: no-store`` → neither; ``no-cache`` → no lookup, still store."""
        directives = {part.split("=", 1)[0].strip().lower() for part in (value or "").split(",")}
        if "no-store" in directives:
            return cls(lookup=False, store=False)
        if "no-cache" in directives:
            return cls(lookup=False, store=True)
        return cls()


def is_deterministic(body: JsonDict) -> bool:
    """The caching rule: ``options.temperature == 0`` or ``options.seed`` set."""
    options = body.get("options")
    if not isinstance(options, dict):
        return False
    temperature = options.get("temperature")
    is_zero = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    return (is_zero and temperature == 0) or options.get("seed") is not None


def cache_key(kind: str, body: JsonDict, digest: str) -> str:
    """``inference:cache:`` + sha256 of the normalised request and the model digest."""
    request = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    material = {
        "v": ENTRY_VERSION,
        "kind": kind,
        "model": normalize_model(str(body["model"])),
        "digest": digest,
        "request": request,
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return KEY_PREFIX + hashlib.sha256(blob.encode()).hexdigest()


async def model_digest(pool: BackendPool, model: str) -> str | None:
    """The model's digests on every reachable backend that lists it (``,``-joined), or None."""
    await pool.available_models()  # refreshes stale model lists (no I/O while fresh)
    wanted = normalize_model(model)
    digests = {
        str(entry["digest"])
        for backend in pool.backends
        if backend.fetched_at > float("-inf")
        for entry in backend.models
        if entry.get("digest") and normalize_model(str(entry.get("name", ""))) == wanted
    }
    return ",".join(sorted(digests)) or None


def split_text(text: str) -> list[str]:
    """Word-sized pieces (whitespace kept) whose concatenation is ``text``."""
    pieces = re.findall(r"\S+\s*|\s+", text)
    return pieces if "".join(pieces) == text else [text]


def _text(chunk: JsonDict) -> str:
    message = chunk.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(chunk.get("response") or "")


def _plain(chunk: JsonDict) -> bool:
    """Only text (no tool calls, thinking, images): what a replay can reproduce exactly."""
    message = chunk.get("message")
    if isinstance(message, dict) and not set(message) <= PLAIN_MESSAGE_KEYS:
        return False
    return "thinking" not in chunk


@dataclass
class CachedAnswer:
    """A stored answer: text pieces in order, plus the final chunk without its text."""

    pieces: list[str]
    final: JsonDict

    def to_json(self) -> bytes:
        data = {"v": ENTRY_VERSION, "pieces": self.pieces, "final": self.final}
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CachedAnswer | None:
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != ENTRY_VERSION:
            return None
        pieces, final = data.get("pieces"), data.get("final")
        if not isinstance(pieces, list) or not isinstance(final, dict):
            return None
        return cls([str(p) for p in pieces], final)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def _with_text(self, kind: str, model: str, text: str, done: bool) -> JsonDict:
        """An Ollama chunk in Ollama's field order; the final one carries the stored stats."""
        base: JsonDict = {"model": model, "created_at": self.final.get("created_at") or _now()}
        if kind == "chat":
            base["message"] = {"role": "assistant", "content": text}
        else:
            base["response"] = text
        base["done"] = done
        if done:
            base.update({k: v for k, v in self.final.items() if k not in base})
        return base

    def chunks(self, kind: str, model: str) -> list[JsonDict]:
        """The Ollama stream of a replay: one chunk per piece, then the final chunk."""
        out = [self._with_text(kind, model, piece, False) for piece in self.pieces]
        out.append(self._with_text(kind, model, "", True))
        return out

    def whole(self, kind: str, model: str) -> JsonDict:
        """The non-streamed Ollama answer."""
        return self._with_text(kind, model, self.text, True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Recorder:
    """Collects a miss's chunks; :meth:`answer` is the storable result (or None)."""

    key: str
    pieces: list[str] = field(default_factory=list)
    plain: bool = True

    def add(self, chunk: JsonDict) -> None:
        self.plain = self.plain and _plain(chunk)
        text = _text(chunk)
        if text:
            self.pieces.append(text)

    def answer(self, final: JsonDict) -> CachedAnswer | None:
        """Only a complete, text-only answer with content is storable."""
        if not self.plain or not final.get("done") or not self.pieces:
            return None
        if final.get("done_reason") in NOT_ANSWERS:
            return None
        rest = {k: v for k, v in final.items() if k not in ("message", "response", "model")}
        return CachedAnswer(list(self.pieces), rest)


@dataclass
class Lookup:
    """Outcome of :meth:`ResponseCache.lookup`: a hit, or where to store the miss (if at all)."""

    status: CacheStatus = "MISS"
    hit: CachedAnswer | None = None
    recorder: Recorder | None = None


class ResponseCache:
    """Deterministic answers in Redis under ``inference:cache:``."""

    def __init__(self, redis: Redis, ttl_s: int, max_bytes: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes

    async def lookup(
        self, pool: BackendPool, kind: str, body: JsonDict, directive: CacheDirective
    ) -> Lookup:
        """Look the request up (when allowed); a miss carries a recorder when storable."""
        if self.bypasses(body, directive):
            _BYPASSED.inc()
            return Lookup("BYPASS")  # X-Cache: BYPASS: neither looked up nor stored
        digest = await model_digest(pool, str(body["model"]))
        if digest is None:  # unknown model or no backend: the normal path reports it
            return Lookup()
        key = cache_key(kind, body, digest)
        if directive.lookup:
            hit = await self.get(key)
            if hit is not None:
                CACHE_EVENTS.labels("hit").inc()
                return Lookup("HIT", hit)
            CACHE_EVENTS.labels("miss").inc()
        else:
            CACHE_EVENTS.labels("bypass").inc()
        return Lookup(recorder=Recorder(key) if directive.store else None)

    @staticmethod
    def bypasses(body: JsonDict, directive: CacheDirective) -> bool:
        """Whether a request is neither looked up nor stored (``X-Cache: BYPASS``)."""
        return not is_deterministic(body) or not (directive.lookup or directive.store)

    async def get(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self.redis.get(key)
        except RedisError:
            logger.warning("response cache read failed", exc_info=True)
            return None
        return None if raw is None else CachedAnswer.from_json(raw)

    async def store(self, recorder: Recorder, final: JsonDict) -> bool:
        """Store a finished answer; False when it is not storable or too large."""
        answer = recorder.answer(final)
        data = None if answer is None else answer.to_json()
        if data is None or len(data) > self.max_bytes:
            CACHE_EVENTS.labels("skipped").inc()
            return False
        try:
            await self.redis.set(recorder.key, data, ex=self.ttl_s)
        except RedisError:
            logger.warning("response cache write failed", exc_info=True)
            return False
        CACHE_EVENTS.labels("stored").inc()
        return True

    async def store_whole(self, recorder: Recorder, result: JsonDict) -> bool:
        """Store a non-streamed answer, split into word pieces for later stream replays."""
        if _plain(result):
            recorder.pieces = split_text(_text(result))
        else:
            recorder.plain = False
        return await self.store(recorder, result)

    async def record_usage(
        self, ledger: UsageLedger, user: str, model: str, final: JsonDict
    ) -> None:
        """A hit in the user's ledger: tokens count as usual, plus ``cached_requests``.

        Backend token metrics are not touched (no backend time was spent); the tokens go to
        ``switchboard_inference_cached_tokens_total`` instead.
        """
        prompt = int(final.get("prompt_eval_count") or 0)
        completion = int(final.get("eval_count") or 0)
        model = normalize_model(model)  # one label per model, whichever spelling asked
        CACHED_TOKENS.labels(model, "prompt").inc(prompt)
        CACHED_TOKENS.labels(model, "completion").inc(completion)
        charge_reserved_usage(prompt, completion)  # the caller got them: they count
        try:
            await ledger.add(user, model, prompt, completion, cached=True)
        except RedisError:
            logger.warning("usage of a cached answer not recorded", exc_info=True)
