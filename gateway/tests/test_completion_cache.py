"""The gateway's completion cache (L1): which requests, which key, what a finished answer
yields (unit); the Redis side in process (real Redis) — store, replay frame by frame,
generation races, what is never stored — and the token gate charging a hit's stored usage
in its one Redis call. The whole path through the real cluster is
``tests/test_completion_cache_e2e.py``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from starlette.types import Message, Receive, Scope

from gateway.config import Settings
from gateway.core.cache import DEFAULT_CACHE_ROUTES, CachePolicy, parse_cache_routes
from gateway.core.completion_cache import (
    Finished,
    client_directive,
    completion_key,
    finished_answer,
    is_deterministic,
)
from gateway.core.security import Decision
from gateway.core.token_limits import TokenGate, TokenLimitPolicy
from gateway.services.completion_cache import CompletionCache, CompletionCapture
from gateway.services.request_body import buffer_body
from gateway.services.response_cache import ResponseCache
from gateway.services.token_budget import TokenBudget
from switchboard_common import create_redis
from switchboard_common.identity import Principal

# --- policy (unit) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/inference/chat", {"options": {"temperature": 0}}, True),
        ("/inference/chat", {"options": {"temperature": 0.0, "top_p": 1}}, True),
        ("/api/generate", {"options": {"seed": 7, "temperature": 1.2}}, True),
        ("/inference/chat", {"options": {"temperature": 0.1}}, False),
        ("/inference/chat", {"options": {"temperature": False}}, False),  # a bool is not 0
        ("/inference/chat", {"temperature": 0}, False),  # native sampling lives in options
        ("/inference/chat", {}, False),
        ("/v1/chat/completions", {"temperature": 0}, True),
        ("/v1/completions", {"seed": 1}, True),
        ("/v1/chat/completions", {"options": {"temperature": 0}}, False),  # OpenAI ignores it
        ("/v1/chat/completions", {"temperature": 1}, False),
    ],
)
def test_determinism_is_the_inference_services_rule(
    path: str, body: dict[str, object], expected: bool
) -> None:
    assert is_deterministic(path, json.dumps(body).encode()) is expected


def test_bodies_that_are_not_json_objects_are_not_deterministic() -> None:
    for raw in (b"", b"[1]", b"{", b"\xff", b'"x"'):
        assert not is_deterministic("/inference/chat", raw)


def test_the_key_is_route_body_and_accept_never_the_caller() -> None:
    key = completion_key("/inference/chat", b"", b"{}")
    assert key == completion_key("/inference/chat", b"", b"{}")
    assert key != completion_key("/api/chat", b"", b"{}")
    assert key != completion_key("/inference/chat", b"text/event-stream", b"{}")
    assert key != completion_key("/inference/chat", b"", b"{ }")  # exact bytes


def test_client_directives() -> None:
    assert client_directive([]) == (client_directive([])[0], b"")
    directive, accept = client_directive([(b"cache-control", b"no-cache"), (b"accept", b"a/b")])
    assert (directive.lookup, directive.store, accept) == (False, True, b"a/b")
    directive, _ = client_directive([(b"cache-control", b"max-age=3, no-store")])
    assert (directive.lookup, directive.store) == (False, False)
    directive, _ = client_directive([(b"pragma", b"no-cache")])
    assert (directive.lookup, directive.store) == (False, True)


def _sse(*frames: tuple[str | None, object]) -> bytes:
    out = b""
    for event, data in frames:
        payload = data if isinstance(data, str) else json.dumps(data)
        out += (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()
    return out


def test_native_sse_keeps_frames_drops_queue_positions_and_reads_usage() -> None:
    body = _sse(
        ("queued", {"position": 2}),
        ("token", {"content": "Hi"}),
        ("token", {"content": " there"}),
        ("usage", {"prompt_tokens": 5, "completion_tokens": 2}),
        ("done", {"done_reason": "stop"}),
    )
    found = finished_answer(b"text/event-stream", body, streamed=True)
    assert isinstance(found, Finished)
    assert found.tokens == 7
    assert len(found.frames) == 4 and found.frames[0].startswith(b"event: token\n")
    assert b"".join(found.frames) == body.split(b"\n\n", 1)[1]


def test_openai_sse_usage_chunk_and_its_absence() -> None:
    chunk = {"choices": [{"delta": {"content": "Hi"}}], "usage": None}
    with_usage = _sse(
        (None, chunk),
        (None, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
        (None, "[DONE]"),
    )
    found = finished_answer(b"text/event-stream", with_usage, streamed=True)
    assert isinstance(found, Finished) and found.tokens == 4 and len(found.frames) == 3
    without = _sse((None, chunk), (None, "[DONE]"))
    assert finished_answer(b"text/event-stream", without, streamed=True) == "no_usage"


def test_ndjson_usage_on_the_final_line() -> None:
    lines = [
        {"message": {"content": "Hi"}, "done": False},
        {"message": {"content": ""}, "done": True, "prompt_eval_count": 4, "eval_count": 6},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    found = finished_answer(b"application/x-ndjson", body, streamed=True)
    assert isinstance(found, Finished) and found.tokens == 10 and len(found.frames) == 2


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"text/event-stream", _sse(("token", {"content": "a"}), ("error", {"status": 502}))),
        (b"text/event-stream", _sse((None, {"error": {"status": 502}}), (None, "[DONE]"))),
        (b"text/event-stream", b"event: token\ndata: {}\n\nevent: tok"),  # cut mid-frame
        (b"application/x-ndjson", b'{"response": "a", "done": false}\n{"error": "boom"}\n'),
        (b"application/x-ndjson", b'{"response": "a", "done": false}\n{"resp'),
        (b"application/octet-stream", b"whatever"),
    ],
)
def test_failed_streams_are_never_kept(content_type: bytes, body: bytes) -> None:
    assert finished_answer(content_type, body, streamed=True) == "failed"


def test_whole_json_answers() -> None:
    native = {"message": {"content": "x"}, "usage": {"prompt_tokens": 2, "completion_tokens": 3}}
    found = finished_answer(b"application/json", json.dumps(native).encode(), streamed=False)
    assert isinstance(found, Finished) and found.tokens == 5 and len(found.frames) == 1
    ollama = {"response": "x", "done": True, "prompt_eval_count": 1, "eval_count": 1}
    found = finished_answer(b"application/json", json.dumps(ollama).encode(), streamed=False)
    assert isinstance(found, Finished) and found.tokens == 2
    assert finished_answer(b"application/json", b'{"response": "x"}', streamed=False) == "no_usage"


# --- the Redis side, in process (real Redis) ---------------------------------------------------

BODY = json.dumps(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "options": {"temperature": 0},
    }
).encode()
FRAMES = [
    b'event: token\ndata: {"content":"Hi"}\n\n',
    b'event: token\ndata: {"content":" you"}\n\n',
    b'event: usage\ndata: {"prompt_tokens":4,"completion_tokens":2}\n\n',
    b'event: done\ndata: {"done_reason":"stop"}\n\n',
]


def _scope(headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/inference/chat",
        "headers": [(b"content-length", b"%d" % len(BODY)), *(headers or [])],
        "switchboard.request_id": "r1",
    }


async def _upstream(
    capture: CompletionCapture,
    frames: list[bytes],
    *,
    last: bool = True,
    x_cache: bytes = b"MISS",
    status: int = 200,
) -> None:
    """A stand-in for the proxy streaming ``frames`` (``last``: the stream ended cleanly)."""
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"x-cache", x_cache),
        (b"x-ratelimit-remaining-tokens", b"77"),
        (b"x-request-id", b"up"),
    ]
    await capture.send({"type": "http.response.start", "status": status, "headers": headers})
    for frame in frames:
        await capture.send({"type": "http.response.body", "body": frame, "more_body": True})
    if last:
        await capture.send({"type": "http.response.body", "body": b""})


async def _discard(message: Message) -> None:
    return None


@pytest.fixture
async def completions(redis_url: str) -> AsyncIterator[CompletionCache]:
    redis = create_redis(redis_url, timeout_s=1)
    store = ResponseCache(
        redis, CachePolicy(parse_cache_routes(DEFAULT_CACHE_ROUTES)), max_bytes=1000
    )
    yield CompletionCache(store, ttl_s=60, max_bytes=4096)
    await redis.aclose()


EXTRA = [(b"x-ratelimit-remaining-tokens", b"77")]


async def _miss_and_keep(cache: CompletionCache, **upstream: object) -> None:
    lookup = await cache.lookup(_scope(), BODY)
    assert lookup is not None and lookup.hit is None
    capture = cache.capture(_discard, EXTRA)
    await _upstream(capture, FRAMES, **upstream)  # type: ignore[arg-type]
    await cache.keep(lookup, capture)


async def test_a_kept_stream_is_replayed_frame_by_frame(completions: CompletionCache) -> None:
    await _miss_and_keep(completions)
    lookup = await completions.lookup(_scope(), BODY)
    assert lookup is not None and lookup.hit is not None and lookup.tokens == 6
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await completions.serve(lookup, _scope(), send, [(b"x-ratelimit-remaining-tokens", b"5")])
    start, *bodies = sent
    headers = start["headers"]
    assert (b"x-cache", b"HIT") in headers and (b"x-cache-layer", b"gateway") in headers
    assert (b"x-accel-buffering", b"no") in headers and (b"x-request-id", b"r1") in headers
    assert (b"content-type", b"text/event-stream; charset=utf-8") in headers
    # this request's budget headers, not the stored request's; the upstream's own x-cache gone
    assert [v for n, v in headers if n == b"x-ratelimit-remaining-tokens"] == [b"5"]
    assert [v for n, v in headers if n == b"x-cache"] == [b"HIT"]
    assert [m["body"] for m in bodies] == [*FRAMES, b""]
    assert [m.get("more_body", False) for m in bodies] == [True] * len(FRAMES) + [False]


@pytest.mark.parametrize(
    "upstream",
    [
        {"last": False},  # cut or cancelled: the final message never came
        {"x_cache": b""},  # the inference service did not offer it for caching
        {"status": 500},
    ],
)
async def test_what_is_never_kept(
    completions: CompletionCache, upstream: dict[str, object]
) -> None:
    if upstream.get("x_cache") == b"":
        lookup = await completions.lookup(_scope(), BODY)
        assert lookup is not None
        capture = completions.capture(_discard, EXTRA)
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
        await capture.send(start)
        for frame in FRAMES:
            await capture.send({"type": "http.response.body", "body": frame, "more_body": True})
        await capture.send({"type": "http.response.body", "body": b""})
        await completions.keep(lookup, capture)
    else:
        await _miss_and_keep(completions, **upstream)
    again = await completions.lookup(_scope(), BODY)
    assert again is not None and again.hit is None


async def test_too_large_is_not_kept(completions: CompletionCache) -> None:
    completions.max_bytes = 40
    await _miss_and_keep(completions)
    again = await completions.lookup(_scope(), BODY)
    assert again is not None and again.hit is None


async def test_an_answer_that_raced_a_model_change_is_not_kept(
    completions: CompletionCache,
) -> None:
    await completions.store.invalidate({"models"}, "write")  # a generation exists
    lookup = await completions.lookup(_scope(), BODY)
    assert lookup is not None
    capture = completions.capture(_discard, EXTRA)
    await _upstream(capture, FRAMES)
    await completions.store.invalidate({"models"}, "write")  # a pull lands meanwhile
    await completions.keep(lookup, capture)
    again = await completions.lookup(_scope(), BODY)
    assert again is not None and again.hit is None
    # and an entry kept before a model change is dead after it
    await _miss_and_keep(completions)
    hit = await completions.lookup(_scope(), BODY)
    assert hit is not None and hit.hit is not None
    await completions.store.invalidate({"models"}, "write")
    stale = await completions.lookup(_scope(), BODY)
    assert stale is not None and stale.hit is None


async def test_client_opt_outs(completions: CompletionCache) -> None:
    await _miss_and_keep(completions)
    refresh = await completions.lookup(_scope([(b"cache-control", b"no-cache")]), BODY)
    assert refresh is not None and refresh.hit is None  # not served, still stored after
    assert await completions.lookup(_scope([(b"cache-control", b"no-store")]), BODY) is None
    sampled = BODY.replace(b'"temperature": 0', b'"temperature": 0.5')
    assert await completions.lookup(_scope(), sampled) is None


# --- the token gate charges a hit's usage ------------------------------------------------------


async def test_a_hit_is_charged_its_usage_at_admission(redis_url: str) -> None:
    redis = create_redis(redis_url, timeout_s=1)
    settings = Settings(token_limits="default=100/minute")
    gate = TokenGate(TokenLimitPolicy(settings), TokenBudget(redis, b"secret", timeout_s=1))
    principal = Principal(sub="u9", username="u9")
    decision = Decision(principal=principal, identity=[(b"x-switchboard-identity", b"i")])
    sent = {"n": 0}

    async def receive() -> Message:
        sent["n"] += 1
        return {"type": "http.request", "body": BODY, "more_body": False}

    try:
        body, replay = await buffer_body(_scope(), receive)
        assert body == BODY and sent["n"] == 1
        admitted, again = await gate.admit(_scope(), replay, decision, body=body, cost=60)
        assert sent["n"] == 1 and again is replay  # the body is not read twice
        headers = dict(admitted.response_headers)
        assert headers[b"x-ratelimit-remaining-tokens"] == b"40"
        # no reservation rides along: a hit is never proxied, nothing will settle it
        assert admitted.identity == decision.identity
        refused, _ = await gate.admit(_scope(), replay, decision, body=body, cost=60)
        assert refused.status == 429
        assert dict(refused.response_headers)[b"x-ratelimit-remaining-tokens"] == b"40"
    finally:
        await redis.aclose()


async def test_an_unused_receive_is_left_alone_for_chunked_bodies() -> None:
    scope = _scope()
    scope["headers"] = [(b"transfer-encoding", b"chunked")]
    receive: Receive = _never
    body, same = await buffer_body(scope, receive)
    assert body is None and same is receive


async def _never() -> Message:
    raise AssertionError("read a body it should have left streaming")


async def test_a_hit_is_looked_up_and_charged_in_one_call(
    completions: CompletionCache, redis_url: str
) -> None:
    budget = TokenBudget(completions.store.redis, b"secret", timeout_s=1)
    policy = TokenLimitPolicy(Settings(token_limits="default=10/minute"))
    rule = policy.for_request(_scope(), Principal(sub="u7", username="u7"))
    assert rule is not None
    # a miss charges nothing (the token gate reserves its estimate as usual)
    miss = await completions.lookup(_scope(), BODY, budget, rule)
    assert miss is not None and miss.hit is None and miss.charged is None
    assert await budget.redis.get(budget.reserve_keys(rule.key)[2]) is None

    await _miss_and_keep(completions)  # usage 6
    hit = await completions.lookup(_scope(), BODY, budget, rule)
    assert hit is not None and hit.hit is not None and hit.charged is not None
    assert (hit.charged.allowed, hit.charged.remaining, hit.charged.reservation) == (True, 4, None)
    assert await budget.redis.get(budget.reserve_keys(rule.key)[2]) == b"6"
    spent = await completions.lookup(_scope(), BODY, budget, rule)  # 6 more do not fit in 4
    assert spent is not None and spent.charged is not None and not spent.charged.allowed
    assert await budget.redis.get(budget.reserve_keys(rule.key)[2]) == b"6"
    # a stale entry (the models group moved on) is neither served nor charged
    await completions.store.invalidate({"models"}, "write")
    stale = await completions.lookup(_scope(), BODY, budget, rule)
    assert stale is not None and stale.hit is None and stale.charged is None
