"""The gateway response cache's policy: what is cached, for whom, for how long, under what key.

Pure functions and data, no I/O (the Redis side is ``services/response_cache.py``):

- ``CacheGroup`` (from ``GATEWAY_CACHE_ROUTES``): GET routes that share a TTL, an
  invalidation tag, whether their answers may be shared across principals (``public``), and
  the write routes whose success invalidates them.
- ``CachePolicy``: path → group for GET/HEAD, path → tags for writes. Memoised, so a
  non-cacheable route costs one dict lookup on the hot path.
- Header parsing that must never raise on client or upstream input: ``Cache-Control``,
  ``If-None-Match`` (malformed → no precondition: the client gets a 200, never an error),
  entity-tag checks and the strong ETag computed from a body.

Patterns: ``/a/b`` exact, ``*`` one path segment, ``**`` (last segment only) zero or more
segments, a leading ``!`` excludes (``!/inference/models/loaded``). Exclusions win.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

TAG_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_TAG = re.compile(TAG_PATTERN)
MAX_HEADER_TAGS = 16

DEFAULT_CACHE_ROUTES = json.dumps(
    [
        {
            # The model list is the same for every caller (authorization still runs per
            # request), so one entry serves everyone.
            "tag": "models",
            "paths": [
                "/inference/models/**",
                "!/inference/models/loaded",
                "/v1/models",
                "/api/tags",
            ],
            "ttl_s": 60,
            "public": True,
            "invalidated_by": [
                "/inference/models/**",
                "/api/pull",
                "/api/delete",
                "/api/create",
                "/api/copy",
            ],
        },
        {
            "tag": "collections",
            "paths": ["/knowledge/collections", "/knowledge/collections/*"],
            "ttl_s": 30,
            "public": False,
            # any write under a collection (documents change its counts), except the
            # read-only POSTs
            "invalidated_by": ["/knowledge/collections/**", "!/knowledge/collections/*/query"],
        },
    ]
)


def _check_pattern(pattern: str) -> str:
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body.startswith("/"):
        raise ValueError(f"pattern {pattern!r} must start with '/' (or '!/')")
    segments = body.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment == "**" and i != len(segments) - 1:
            raise ValueError(f"pattern {pattern!r}: '**' may only be the last segment")
        if "*" in segment and segment not in ("*", "**"):
            raise ValueError(f"pattern {pattern!r}: '*' must be a whole segment")
    return pattern


class CacheGroup(BaseModel):
    """GET routes cached alike, and the writes that invalidate them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tag: str = Field(pattern=TAG_PATTERN, description="Invalidation tag of the group.")
    paths: list[str] = Field(min_length=1, description="GET/HEAD path patterns cached.")
    ttl_s: float = Field(gt=0, le=86_400, description="Longest life of an entry (s).")
    public: bool = Field(
        default=False,
        description="Entries shared by every caller allowed on the route (else one per principal).",
    )
    invalidated_by: list[str] = Field(
        default_factory=list,
        description="Paths whose successful POST/PUT/PATCH/DELETE invalidates the group.",
    )

    @field_validator("paths", "invalidated_by")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        return [_check_pattern(p.strip()) for p in patterns]


_GROUPS = TypeAdapter(list[CacheGroup])


def parse_cache_routes(text: str) -> list[CacheGroup]:
    """``GATEWAY_CACHE_ROUTES`` (a JSON list of groups); raises ValueError when invalid."""
    groups = _GROUPS.validate_json(text or "[]")
    tags = [g.tag for g in groups]
    if len(set(tags)) != len(tags):
        raise ValueError("cache route tags must be unique")
    return groups


# --- path patterns ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pattern:
    segments: tuple[str, ...]
    tail: bool  # ends with "**"

    @classmethod
    def compile(cls, pattern: str) -> _Pattern:
        segments = tuple(pattern.split("/")[1:])
        if segments and segments[-1] == "**":
            return cls(segments[:-1], True)
        return cls(segments, False)

    @property
    def static_prefix(self) -> str:
        """The literal start of every path it matches (for a cheap pre-filter)."""
        literal: list[str] = []
        for segment in self.segments:
            if segment == "*":
                break
            literal.append(segment)
        return "/" + "/".join(literal)

    def matches(self, segments: list[str]) -> bool:
        n = len(self.segments)
        if len(segments) < n or (not self.tail and len(segments) != n):
            return False
        return all(p == "*" or p == s for p, s in zip(self.segments, segments, strict=False))


class PatternSet:
    """Include/exclude patterns; ``matches`` is false unless an include and no exclude match."""

    def __init__(self, patterns: list[str]) -> None:
        self.include = [_Pattern.compile(p) for p in patterns if not p.startswith("!")]
        self.exclude = [_Pattern.compile(p[1:]) for p in patterns if p.startswith("!")]
        self.prefixes = tuple(p.static_prefix for p in self.include)

    def matches(self, path: str) -> bool:
        if not path.startswith(self.prefixes):
            return False
        segments = path.split("/")[1:]
        return any(p.matches(segments) for p in self.include) and not any(
            p.matches(segments) for p in self.exclude
        )


_MEMO_SIZE = 4096  # paths carry ids: keep the memos bounded


class CachePolicy:
    def __init__(self, groups: list[CacheGroup]) -> None:
        self.groups = groups
        self._reads = [(PatternSet(g.paths), g) for g in groups]
        self._writes = [(PatternSet(g.invalidated_by), g.tag) for g in groups if g.invalidated_by]
        self._read_prefixes = tuple(p for s, _ in self._reads for p in s.prefixes)
        self._write_prefixes = tuple(p for s, _ in self._writes for p in s.prefixes)
        self._read_memo: dict[str, CacheGroup | None] = {}
        self._write_memo: dict[str, tuple[str, ...]] = {}

    def group_for(self, path: str) -> CacheGroup | None:
        """The group caching GET/HEAD ``path``, if any (first listed group wins)."""
        try:
            return self._read_memo[path]
        except KeyError:
            pass
        found: CacheGroup | None = None
        if path.startswith(self._read_prefixes):
            found = next((g for s, g in self._reads if s.matches(path)), None)
        if len(self._read_memo) < _MEMO_SIZE:
            self._read_memo[path] = found
        return found

    def tags_invalidated_by(self, path: str) -> tuple[str, ...]:
        """Tags a successful write to ``path`` invalidates."""
        try:
            return self._write_memo[path]
        except KeyError:
            pass
        tags: tuple[str, ...] = ()
        if path.startswith(self._write_prefixes):
            tags = tuple(tag for s, tag in self._writes if s.matches(path))
        if len(self._write_memo) < _MEMO_SIZE:
            self._write_memo[path] = tags
        return tags


# --- keys -----------------------------------------------------------------------------------

VARY_REQUEST_HEADERS = (b"accept", b"accept-encoding", b"accept-language")


def canonical_query(query: bytes) -> str:
    """The query with parameters sorted by name (values of a repeated name keep their order,
    which the service may rely on) and one spelling per character."""
    if not query:
        return ""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    return urlencode(sorted(pairs, key=lambda kv: kv[0]))


def resource_key(
    service: str, raw_path: bytes, query: bytes, vary: dict[bytes, bytes], owner: str
) -> str:
    """A digest naming one cached representation: what the upstream was asked, the request
    headers that may change its answer, and whose answer it is (``owner``: ``public``, a
    principal, or ``anonymous``)."""
    h = hashlib.sha256()
    for part in (service.encode(), raw_path, canonical_query(query).encode(), owner.encode()):
        h.update(part)
        h.update(b"\x00")
    for name in VARY_REQUEST_HEADERS:
        h.update(vary.get(name, b""))
        h.update(b"\x00")
    return h.hexdigest()


# --- Cache-Control --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheControl:
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    invalid: bool = False  # an unparseable max-age: treated as "do not store"


def parse_cache_control(values: list[bytes]) -> CacheControl:
    """Directives of one or more ``Cache-Control`` header values (RFC 9111 §5.2)."""
    found: dict[str, str | None] = {}
    for value in values:
        for item in value.decode("latin-1").split(","):
            name, sep, arg = item.strip().partition("=")
            if name:
                found[name.lower()] = arg.strip().strip('"') if sep else None
    invalid = False

    def seconds(name: str) -> int | None:
        nonlocal invalid
        if name not in found:
            return None
        raw = found[name]
        if raw is None or not raw.isdigit():
            invalid = True
            return None
        return int(raw)

    return CacheControl(
        no_store="no-store" in found,
        no_cache="no-cache" in found,
        private="private" in found,
        max_age=seconds("max-age"),
        s_maxage=seconds("s-maxage"),
        invalid=invalid,
    )


# --- entity tags ------------------------------------------------------------------------------

_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_LIST_ITEM = re.compile(r'\s*((?:W/)?"[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def valid_etag(value: bytes) -> bool:
    return _ENTITY_TAG.fullmatch(value.decode("latin-1")) is not None


def strong_etag(body: bytes) -> bytes:
    """A strong validator from the body's bytes: equal bodies, equal tags, on any replica."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()[:18])
    return b'"' + digest + b'"'


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


@dataclass(frozen=True, slots=True)
class IfNoneMatch:
    """A parsed ``If-None-Match``: ``*`` or a set of opaque tags (weak comparison)."""

    any: bool
    tags: frozenset[str]

    def matches(self, etag: bytes) -> bool:
        return self.any or _opaque(etag.decode("latin-1")) in self.tags


def parse_if_none_match(values: list[bytes]) -> IfNoneMatch | None:
    """None when absent or malformed: a bad precondition is ignored (RFC 9110 §13.1.2 lets
    the server evaluate only well-formed ones), so the client gets a full 200."""
    if not values:
        return None
    text = ",".join(v.decode("latin-1") for v in values).strip()
    if text == "*":
        return IfNoneMatch(True, frozenset())
    tags: set[str] = set()
    pos = 0
    while pos < len(text):
        item = _LIST_ITEM.match(text, pos)
        if item is None or item.end() == pos:
            return None
        tags.add(_opaque(item.group(1)))
        pos = item.end()
    return IfNoneMatch(False, frozenset(tags)) if tags else None


def parse_invalidate_header(value: bytes) -> list[str]:
    """Tags named by an upstream's ``Switchboard-Cache-Invalidate``; bad names are ignored."""
    names = (t.strip() for t in value.decode("latin-1").split(","))
    return [t for t in names if _TAG.match(t)][:MAX_HEADER_TAGS]


# --- the request side -----------------------------------------------------------------------

Headers = list[tuple[bytes, bytes]]
CONDITIONAL_REQUEST_HEADERS = frozenset({b"if-none-match", b"if-modified-since"})


@dataclass(slots=True)
class CacheRequest:
    """The request headers the cache reads, gathered in one pass; ``upstream_headers`` are
    the request's without the conditional ones, which the cache answers itself (the
    upstream must give a full 200 to keep)."""

    if_none_match: IfNoneMatch | None
    control: CacheControl
    vary: dict[bytes, bytes]
    upstream_headers: Headers

    @classmethod
    def parse(cls, headers: Headers) -> CacheRequest:
        inm: list[bytes] = []
        control: list[bytes] = []
        vary: dict[bytes, bytes] = {}
        upstream: Headers = []
        for name, value in headers:
            if name in CONDITIONAL_REQUEST_HEADERS:
                if name == b"if-none-match":
                    inm.append(value)
                continue
            upstream.append((name, value))
            if name == b"cache-control" or name == b"pragma":
                control.append(value)
            elif name in VARY_REQUEST_HEADERS:
                vary[name] = vary[name] + b"," + value if name in vary else value
        return cls(parse_if_none_match(inm), parse_cache_control(control), vary, upstream)
