"""The gateway's GET response cache: policy and header parsing (unit), the Redis store
(real Redis, in process), and the whole path through real processes — two gateways sharing
one Redis in front of ``tests.support.cacheable_upstream``, with real bearer tokens."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OKPKey
from starlette.types import Message, Receive, Scope, Send

from gateway.config import Settings
from gateway.core.cache import (
    DEFAULT_CACHE_ROUTES,
    CachePolicy,
    canonical_query,
    parse_cache_control,
    parse_cache_routes,
    parse_if_none_match,
    parse_invalidate_header,
    resource_key,
    strong_etag,
)
from gateway.services.response_cache import ResponseCache
from switchboard_common import create_redis
from switchboard_common.identity import Principal
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.fixtures.redis import RedisServer

# --- policy (unit) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> CachePolicy:
    return CachePolicy(parse_cache_routes(DEFAULT_CACHE_ROUTES))


@pytest.mark.parametrize(
    ("path", "tag"),
    [
        ("/inference/models", "models"),
        ("/inference/models/llama3.2:latest", "models"),
        ("/inference/models/hf.co/org/model", "models"),  # names may contain slashes
        ("/inference/models/loaded", None),  # changes without writes: excluded
        ("/v1/models", "models"),
        ("/api/tags", "models"),
        ("/api/ps", None),
        ("/knowledge/collections", "collections"),
        ("/knowledge/collections/docs", "collections"),
        ("/knowledge/collections/docs/documents/1", None),
        ("/inference/modelsx", None),
        ("/memory/facts", None),
    ],
)
def test_cached_routes(policy: CachePolicy, path: str, tag: str | None) -> None:
    group = policy.group_for(path)
    assert (group.tag if group else None) == tag
    assert policy.group_for(path) is group  # memoised


@pytest.mark.parametrize(
    ("path", "tags"),
    [
        ("/inference/models/pull", ("models",)),
        ("/inference/models/llama3.2", ("models",)),
        ("/api/pull", ("models",)),
        ("/api/delete", ("models",)),
        ("/inference/chat", ()),
        ("/knowledge/collections", ("collections",)),
        ("/knowledge/collections/docs/documents", ("collections",)),
        ("/knowledge/collections/docs/query", ()),  # a read that happens to be a POST
    ],
)
def test_writes_that_invalidate(policy: CachePolicy, path: str, tags: tuple[str, ...]) -> None:
    assert policy.tags_invalidated_by(path) == tags


def test_bad_cache_routes_are_refused_at_start() -> None:
    for bad in (
        "not json",
        '[{"tag": "a b", "paths": ["/x"], "ttl_s": 1}]',
        '[{"tag": "a", "paths": ["x"], "ttl_s": 1}]',
        '[{"tag": "a", "paths": ["/x/**/y"], "ttl_s": 1}]',
        '[{"tag": "a", "paths": ["/x/a*"], "ttl_s": 1}]',
        '[{"tag": "a", "paths": ["/x"], "ttl_s": 0}]',
        '[{"tag": "a", "paths": ["/x"], "ttl_s": 1}, {"tag": "a", "paths": ["/y"], "ttl_s": 1}]',
    ):
        with pytest.raises(ValueError, match="cache_routes"):
            Settings(cache_routes=bad)


def test_if_none_match_parsing_never_raises() -> None:
    inm = parse_if_none_match([b'"a", W/"b"', b' "c"'])
    assert inm is not None and inm.tags == {'"a"', '"b"', '"c"'}
    assert inm.matches(b'W/"a"') and inm.matches(b'"b"') and not inm.matches(b'"d"')
    star = parse_if_none_match([b"*"])
    assert star is not None and star.matches(b'"anything"')
    for malformed in (b"abc", b'"unterminated', b'"a" "b"', b'"a",,', b"\xff\xfe", b"", b"W/"):
        assert parse_if_none_match([malformed]) is None
    assert parse_if_none_match([]) is None


def test_cache_control_and_other_headers() -> None:
    cc = parse_cache_control([b"private, max-age=30", b"S-MAXAGE=5"])
    assert (cc.private, cc.max_age, cc.s_maxage, cc.no_store) == (True, 30, 5, False)
    assert parse_cache_control([b'no-cache="set-cookie"']).no_cache
    assert parse_cache_control([b"max-age=soon"]).invalid
    assert parse_invalidate_header(b"models, bad tag, ,collections") == ["models", "collections"]
    assert canonical_query(b"b=2&a=1&b=1&c=%20") == canonical_query(b"a=1&b=2&b=1&c=+")
    assert canonical_query(b"b=2&b=1") != canonical_query(b"b=1&b=2")  # order of a list kept
    etag = strong_etag(b"body")
    assert etag.startswith(b'"') and etag == strong_etag(b"body") != strong_etag(b"other")
    key = resource_key("inference", b"/v1/models", b"", {}, "public")
    assert key != resource_key("inference", b"/v1/models", b"", {}, "user:1")
    assert key != resource_key("inference", b"/v1/models", b"", {b"accept": b"text/html"}, "public")


# --- the Redis store, in process (real Redis) --------------------------------------------------


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [],
        "switchboard.request_id": "r1",
    }


async def _get(
    cache: ResponseCache,
    path: str,
    upstream: Upstream,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    plan = cache.plan("GET", path)
    assert plan is not None
    user = Principal(sub="1", username="u")
    await cache.handle(plan, _scope(path, headers), receive, send, upstream, "inference", user, [])
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


Upstream = Callable[[Scope, Receive, Send], Awaitable[None]]


def _upstream(
    body: bytes, calls: list[str], during: Callable[[], Awaitable[None]] | None = None
) -> Upstream:
    """A stand-in for the proxy: answers ``body``, running ``during`` before it answers."""

    async def forward(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        if during is not None:
            await during()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return forward


async def test_an_answer_fetched_across_an_invalidation_is_not_kept(redis_url: str) -> None:
    redis = create_redis(redis_url, timeout_s=1)
    cache = ResponseCache(
        redis, CachePolicy(parse_cache_routes(DEFAULT_CACHE_ROUTES)), max_bytes=1000
    )
    calls: list[str] = []
    try:
        invalidate = lambda: cache.invalidate({"models"}, "write")  # noqa: E731
        # the write lands while the upstream is answering: the answer may predate it
        status, headers, _ = await _get(cache, "/v1/models", _upstream(b"[1]", calls, invalidate))
        assert (status, headers[b"x-cache"]) == (200, b"MISS")
        status, headers, _ = await _get(cache, "/v1/models", _upstream(b"[2]", calls))
        assert headers[b"x-cache"] == b"MISS"  # not served from the racing answer
        status, headers, body = await _get(cache, "/v1/models", _upstream(b"[3]", calls))
        assert (headers[b"x-cache"], body) == (b"HIT", b"[2]")
        assert len(calls) == 2
    finally:
        await redis.aclose()


async def test_too_large_answers_pass_through_unstored(redis_url: str) -> None:
    redis = create_redis(redis_url, timeout_s=1)
    cache = ResponseCache(redis, CachePolicy(parse_cache_routes(DEFAULT_CACHE_ROUTES)), max_bytes=4)
    calls: list[str] = []
    try:
        for _ in range(2):
            _, headers, body = await _get(cache, "/v1/models", _upstream(b"12345", calls))
            assert (headers[b"x-cache"], body) == (b"MISS", b"12345")
        assert len(calls) == 2
    finally:
        await redis.aclose()


# --- through real processes ----------------------------------------------------------------

KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "cache-test", "alg": "Ed25519"})


def token(sub: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": "switchboard-auth",
        "aud": "switchboard",
        "sub": sub,
        "sid": secrets.token_hex(4),
        "scope": "inference knowledge memory",
        "tier": "free",
        "role": "user",
        "username": f"user-{sub}",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": secrets.token_hex(4),
    }
    head = {"alg": "Ed25519", "typ": "at+jwt", "kid": "cache-test"}
    return {"Authorization": "Bearer " + jwt.encode(head, claims, KEY, algorithms=["Ed25519"])}


ANN, BOB = token("ann"), token("bob")


@dataclass
class Stack:
    gateways: list[str]
    upstream: str


def _start(spawn: Spawn, redis_url: str, replicas: int) -> Stack:
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    jwks = json.dumps({"keys": [KEY.as_dict(private=False)]})
    spawn(
        "cacheable",
        module_argv("tests.support.cacheable_upstream"),
        env={"CACHEABLE_PORT": str(port), "CACHEABLE_JWKS": jwks},
        ready_url=upstream + "/ready",
    )
    gateways = []
    for i in range(replicas):
        gw_port = free_port()
        url = f"http://127.0.0.1:{gw_port}"
        spawn(
            f"gateway{i}",
            module_argv("gateway"),
            env={
                "GATEWAY_PORT": str(gw_port),
                **{f"GATEWAY_{s}_URL": upstream for s in ("AUTH", "INFERENCE", "KNOWLEDGE")},
                "GATEWAY_MEMORY_URL": upstream,
                "GATEWAY_REDIS_URL": redis_url,
                "GATEWAY_RATE_LIMIT_ENABLED": "false",
                "GATEWAY_CACHE_TIMEOUT_S": "0.1",
            },
            ready_url=url + "/ready",
        )
        gateways.append(url)
    return Stack(gateways, upstream)


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    return _start(module_spawn, redis_server.url(12), replicas=2)


@pytest.fixture
def gw(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateways[0], timeout=10) as client:
        yield client


def test_miss_then_hit_with_etag_and_age(gw: httpx.Client) -> None:
    first = gw.get("/inference/models/t1", headers=ANN)
    assert first.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    etag = first.headers["etag"]
    assert etag.startswith('"')
    second = gw.get("/inference/models/t1", headers=ANN)
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["etag"] == etag
    assert second.content == first.content  # the same upstream answer, served once
    assert second.json()["served"] == 1
    assert int(second.headers["age"]) >= 0
    assert second.headers["content-type"] == "application/json"
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    head = gw.head("/inference/models/t1", headers=ANN)
    assert (head.status_code, head.headers["x-cache"], head.content) == (200, "HIT", b"")


def test_if_none_match_gives_304(gw: httpx.Client) -> None:
    etag = gw.get("/inference/models/t2", headers=ANN).headers["etag"]
    weak = "W/" + etag
    for inm in (etag, "*", f'"other", {weak}', weak):
        resp = gw.get("/inference/models/t2", headers={**ANN, "If-None-Match": inm})
        assert resp.status_code == 304, inm
        assert resp.content == b""
        assert resp.headers["etag"] == etag
        assert resp.headers["x-cache"] == "HIT"
    other = gw.get("/inference/models/t2", headers={**ANN, "If-None-Match": '"nope"'})
    assert (other.status_code, other.headers["x-cache"]) == (200, "HIT")


def test_if_none_match_on_a_miss_uses_the_upstream_etag_and_is_not_forwarded(
    gw: httpx.Client,
) -> None:
    params = {"etag": '"v1"'}
    resp = gw.get("/inference/models/t3", params=params, headers={**ANN, "If-None-Match": '"v1"'})
    assert (resp.status_code, resp.headers["x-cache"], resp.headers["etag"]) == (
        304,
        "MISS",
        '"v1"',
    )
    hit = gw.get("/inference/models/t3", params=params, headers=ANN)
    assert hit.headers["x-cache"] == "HIT"
    assert hit.json()["if_none_match"] is None  # the upstream was asked for a full answer


@pytest.mark.parametrize("inm", ["abc", '"unterminated', '"a" "b"', "W/", ",,,"])
def test_malformed_if_none_match_is_a_200(gw: httpx.Client, inm: str) -> None:
    gw.get("/inference/models/t4", headers=ANN)
    resp = gw.get("/inference/models/t4", headers={**ANN, "If-None-Match": inm})
    assert resp.status_code == 200
    assert resp.json()["path"] == "/inference/models/t4"


def test_per_user_entries_never_cross(gw: httpx.Client) -> None:
    ann = gw.get("/knowledge/collections/c1", headers=ANN)
    bob = gw.get("/knowledge/collections/c1", headers=BOB)
    assert (ann.json()["sub"], ann.headers["x-cache"]) == ("ann", "MISS")
    assert (bob.json()["sub"], bob.headers["x-cache"]) == ("bob", "MISS")
    assert gw.get("/knowledge/collections/c1", headers=BOB).json()["sub"] == "bob"
    again = gw.get("/knowledge/collections/c1", headers=ANN)
    assert (again.json()["sub"], again.headers["x-cache"]) == ("ann", "HIT")
    # an ETag learnt by one user does not turn into a 304 (or a body) for another
    carol = gw.get(
        "/knowledge/collections/c1",
        headers={**token("carol"), "If-None-Match": ann.headers["etag"]},
    )
    assert (carol.status_code, carol.json()["sub"]) == (200, "carol")


def test_public_route_is_shared_but_private_answers_are_not(gw: httpx.Client) -> None:
    ann = gw.get("/inference/models/t5", headers=ANN)
    bob = gw.get("/inference/models/t5", headers=BOB)
    assert bob.headers["x-cache"] == "HIT"
    assert bob.content == ann.content  # one entry for every caller of a public route
    private = {"cc": "private, max-age=60"}
    ann = gw.get("/inference/models/t6", params=private, headers=ANN)
    bob = gw.get("/inference/models/t6", params=private, headers=BOB)
    assert (bob.headers["x-cache"], bob.json()["sub"]) == ("MISS", "bob")
    again = gw.get("/inference/models/t6", params=private, headers=ANN)
    assert (again.headers["x-cache"], again.json()["sub"]) == ("HIT", "ann")


def test_not_stored_when_upstream_or_client_says_so(gw: httpx.Client) -> None:
    for params in (
        {"cc": "no-store"},
        {"cc": "no-cache"},
        {"cc": "max-age=0"},
        {"stream": "1"},
        {"vary": "Authorization"},  # varies on something the key does not hold
    ):
        results = [gw.get("/inference/models/t7", params=params, headers=ANN) for _ in range(2)]
        assert [r.headers["x-cache"] for r in results] == ["MISS", "MISS"], params
        assert results[1].text != results[0].text  # the upstream answered both
    gw.get("/inference/models/t8", headers=ANN)
    fresh = gw.get("/inference/models/t8", headers={**ANN, "Cache-Control": "no-cache"})
    assert (fresh.headers["x-cache"], fresh.json()["served"]) == ("MISS", 2)
    refreshed = gw.get("/inference/models/t8", headers=ANN)
    assert (refreshed.headers["x-cache"], refreshed.json()["served"]) == ("HIT", 2)


def test_max_age_bounds_the_ttl(gw: httpx.Client) -> None:
    params = {"cc": "max-age=1"}
    assert gw.get("/inference/models/t9", params=params, headers=ANN).headers["x-cache"] == "MISS"
    assert gw.get("/inference/models/t9", params=params, headers=ANN).headers["x-cache"] == "HIT"
    time.sleep(1.3)
    resp = gw.get("/inference/models/t9", params=params, headers=ANN)
    assert (resp.headers["x-cache"], resp.json()["served"]) == ("MISS", 2)


def test_a_write_through_the_gateway_invalidates_its_group(gw: httpx.Client) -> None:
    gw.get("/knowledge/collections", headers=ANN)
    before = gw.get("/knowledge/collections", headers=ANN)
    assert before.headers["x-cache"] == "HIT"
    # a read-only POST and a failed write leave the entry alone
    assert gw.post("/knowledge/collections/c1/query", headers=ANN).status_code == 201
    assert gw.post("/knowledge/collections", params={"status": 409}, headers=ANN).status_code == 409
    assert gw.get("/knowledge/collections", headers=ANN).headers["x-cache"] == "HIT"
    assert gw.post("/knowledge/collections", headers=ANN).status_code == 201
    after = gw.get("/knowledge/collections", headers=ANN)  # read-your-write, at once
    assert after.headers["x-cache"] == "MISS"
    assert after.json()["version"] > before.json()["version"]
    assert gw.delete("/inference/models/old", headers=ANN).status_code == 204
    assert gw.get("/v1/models", headers=ANN).headers["x-cache"] == "MISS"


def test_an_upstream_header_invalidates_and_is_stripped(gw: httpx.Client) -> None:
    gw.get("/inference/models/t10", headers=ANN)
    assert gw.get("/inference/models/t10", headers=ANN).headers["x-cache"] == "HIT"
    write = gw.post("/memory/facts", params={"invalidate": "models, bogus tag"}, headers=ANN)
    assert write.status_code == 201
    assert "switchboard-cache-invalidate" not in write.headers
    assert gw.get("/inference/models/t10", headers=ANN).headers["x-cache"] == "MISS"


def test_replicas_share_entries_and_invalidations(stack: Stack) -> None:
    one, two = (httpx.Client(base_url=u, timeout=10) for u in stack.gateways)
    with one, two:
        assert one.get("/knowledge/collections/c2", headers=ANN).headers["x-cache"] == "MISS"
        assert two.get("/knowledge/collections/c2", headers=ANN).headers["x-cache"] == "HIT"
        assert two.put("/knowledge/collections/c2", headers=ANN).status_code == 201
        resp = one.get("/knowledge/collections/c2", headers=ANN)
        assert (resp.headers["x-cache"], resp.json()["served"]) == ("MISS", 2)


# Last in the module: it crashes the session's Redis (and restarts it).
def test_redis_down_still_serves(stack: Stack, redis_server: RedisServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=stack.gateways[0], timeout=10) as gw:
        gw.get("/inference/models/t11", headers=ANN)
        assert gw.get("/inference/models/t11", headers=ANN).headers["x-cache"] == "HIT"
        redis_server.kill()
        try:
            started = time.monotonic()
            for i in range(10):
                resp = gw.get("/inference/models/t11", headers=ANN)
                assert (resp.status_code, resp.headers["x-cache"]) == (200, "MISS")
                assert resp.json()["served"] == 2 + i
            assert gw.post("/inference/models/pull", headers=ANN).status_code == 201
            assert time.monotonic() - started < 3
        finally:
            redis_server.restart(tmp_path)
        # it recovers by itself: once past the retry window (and the pool's connections to
        # the dead server are dropped), entries are stored and served again
        deadline = time.monotonic() + 6
        results: list[str] = []
        while time.monotonic() < deadline and results[-2:] != ["MISS", "HIT"]:
            results.append(gw.get("/inference/models/t11", headers=ANN).headers["x-cache"])
            time.sleep(0.2)
        assert results[-2:] == ["MISS", "HIT"], results
