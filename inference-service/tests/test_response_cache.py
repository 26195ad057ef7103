"""Response cache for deterministic completions (docs/caching.md), through a real service
process, the Ollama simulator and Redis; plus the pure key/rule helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from inference_service.services.response_cache import (
    CacheDirective,
    cache_key,
    is_deterministic,
    split_text,
)
from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import (
    Stack,
    ident,
    sse_events,
    start_inference,
    start_stack,
)


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    return start_stack(module_spawn, redis_server.url(0), "sim-cache")


@pytest.fixture
def client(stack: Stack) -> httpx.Client:
    stack.sim.reset()
    return httpx.Client(base_url=stack.service.url, headers=ident("inference"), timeout=10)


def messages() -> list[dict[str, str]]:
    """A prompt no other test uses, so entries never leak between tests."""
    return [{"role": "user", "content": f"Why is the sky blue? {uuid.uuid4().hex}"}]


def chat(options: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "llama3.2", "messages": messages(), **extra}
    if options is not None:
        body["options"] = options
    return body


# --- rule and key (pure) ---------------------------------------------------------------


def test_deterministic_rule() -> None:
    assert is_deterministic({"options": {"temperature": 0}})
    assert is_deterministic({"options": {"temperature": 0.0}})
    assert is_deterministic({"options": {"seed": 0, "temperature": 0.8}})
    assert not is_deterministic({"options": {"temperature": 0.2}})
    assert not is_deterministic({"options": {}})
    assert not is_deterministic({})


def test_cache_control_directives() -> None:
    assert CacheDirective.from_header(None) == CacheDirective(True, True)
    assert CacheDirective.from_header("no-cache") == CacheDirective(False, True)
    assert CacheDirective.from_header("max-age=0, No-Store") == CacheDirective(False, False)


def test_key_ignores_transport_fields_but_not_inputs() -> None:
    body = {"model": "llama3.2", "prompt": "hi", "options": {"seed": 1, "top_k": 5}}
    key = cache_key("generate", body, "d1")
    same = {
        "options": {"top_k": 5, "seed": 1},
        "prompt": "hi",
        "model": "llama3.2:latest",
        "stream": True,
        "keep_alive": "5m",
    }
    assert cache_key("generate", same, "d1") == key
    assert key.startswith("inference:cache:")
    assert cache_key("generate", body, "d2") != key  # re-pulled model, new digest
    assert cache_key("chat", body, "d1") != key
    assert cache_key("generate", {**body, "system": "be brief"}, "d1") != key
    assert cache_key("generate", {**body, "options": {"seed": 2, "top_k": 5}}, "d1") != key
    assert cache_key("generate", {**body, "format": "json"}, "d1") != key


def test_split_text_round_trips() -> None:
    for text in ["", " lead", "a b  c\n", "one"]:
        assert "".join(split_text(text)) == text
    assert len(split_text("a b c")) == 3


# --- through the service -----------------------------------------------------------------


def test_second_identical_request_is_a_hit_without_a_backend_call(
    client: httpx.Client, stack: Stack
) -> None:
    body = chat({"seed": 7})
    first = client.post("/inference/chat", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "MISS"
    calls = stack.sim.requests("/api/chat")
    assert calls == 1
    second = client.post("/inference/chat", json=body)
    assert second.status_code == 200, second.text
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    assert stack.sim.requests("/api/chat") == calls
    # the hit is in the ledger, counted like a miss and flagged
    totals = client.get("/inference/usage").json()["totals"]["llama3.2:latest"]
    assert totals["requests"] == 2
    assert totals["cached_requests"] == 1
    assert totals["completion_tokens"] == 2 * first.json()["usage"]["completion_tokens"]
    # the hit's tokens are counted under the model's full name, as generations are
    metrics = client.get("/metrics").text
    assert 'cached_tokens_total{kind="completion",model="llama3.2:latest"}' in metrics
    assert 'model="llama3.2"' not in metrics


def test_ollama_generate_hit_is_the_same_json(client: httpx.Client, stack: Stack) -> None:
    body = {"model": "llama3.2", "prompt": uuid.uuid4().hex, "stream": False}
    body["options"] = {"temperature": 0}
    first = client.post("/api/generate", json=body)
    second = client.post("/api/generate", json=body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()
    assert stack.sim.requests("/api/generate") == 1


def test_cache_is_shared_across_users_and_wire_formats(client: httpx.Client, stack: Stack) -> None:
    body = chat({"temperature": 0})
    native = client.post("/inference/chat", json=body).json()["message"]["content"]
    other_user = ident("inference")
    oll = client.post("/api/chat", json={**body, "stream": False}, headers=other_user)
    assert oll.headers["x-cache"] == "HIT"
    assert oll.json()["message"]["content"] == native
    oai = client.post(
        "/v1/chat/completions",
        json={"model": "llama3.2", "messages": body["messages"], "temperature": 0},
    )
    assert oai.headers["x-cache"] == "HIT"
    assert oai.json()["choices"][0]["message"]["content"] == native
    assert stack.sim.requests("/api/chat") == 1


def _native(text: str) -> tuple[list[str], str]:
    events = sse_events(text)
    return [name for name, _ in events], "".join(
        data["content"] for name, data in events if name == "token"
    )


def _openai(text: str) -> tuple[list[str], str]:
    events = [data for _, data in sse_events(text)]
    shape = ["done" if d == "[DONE]" else str(d["choices"][0]["finish_reason"]) for d in events]
    content = "".join(
        d["choices"][0]["delta"].get("content") or "" for d in events if isinstance(d, dict)
    )
    return shape, content


def _ndjson(text: str) -> tuple[list[str], str]:
    lines = [json.loads(line) for line in text.splitlines()]
    return [str(line["done"]) for line in lines], "".join(
        line["message"]["content"] for line in lines
    )


Parser = Callable[[str], tuple[list[str], str]]


@pytest.mark.parametrize(
    ("path", "media", "parse"),
    [
        ("/inference/chat", "text/event-stream", _native),
        ("/v1/chat/completions", "text/event-stream", _openai),
        ("/api/chat", "application/x-ndjson", _ndjson),
    ],
)
def test_streaming_hit_replays_chunk_by_chunk_in_the_same_framing(
    client: httpx.Client, stack: Stack, path: str, media: str, parse: Parser
) -> None:
    body = chat(stream=True)
    if path.startswith("/v1"):
        body["seed"] = 3
    else:
        body["options"] = {"seed": 3}
    first = client.post(path, json=body)
    second = client.post(path, json=body)
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith(media)
    miss_shape, miss_text = parse(first.text)
    hit_shape, hit_text = parse(second.text)
    assert hit_shape == miss_shape and hit_text == miss_text and miss_text
    assert len(hit_shape) >= 3  # several pieces plus the end, never one blob
    assert stack.sim.requests("/api/chat") == 1


def test_non_deterministic_requests_are_never_cached(client: httpx.Client, stack: Stack) -> None:
    for body in (chat({"temperature": 0.7}), chat()):
        for _ in range(2):
            resp = client.post("/inference/chat", json=body)
            assert resp.headers["x-cache"] == "BYPASS"
    assert stack.sim.requests("/api/chat") == 4


def test_no_store_bypasses_and_no_cache_refreshes(client: httpx.Client, stack: Stack) -> None:
    body = chat({"seed": 11})
    for _ in range(2):
        resp = client.post("/inference/chat", json=body, headers={"Cache-Control": "no-store"})
        assert resp.headers["x-cache"] == "BYPASS"
    assert client.post("/inference/chat", json=body).headers["x-cache"] == "MISS"  # stores
    refreshed = client.post("/inference/chat", json=body, headers={"Cache-Control": "no-cache"})
    assert refreshed.headers["x-cache"] == "MISS"
    assert stack.sim.requests("/api/chat") == 4
    assert client.post("/inference/chat", json=body).headers["x-cache"] == "HIT"


def test_a_stream_that_fails_mid_way_is_not_stored(client: httpx.Client, stack: Stack) -> None:
    stack.sim.config(fail_mode="error_after_tokens", fail_after_tokens=3, fail_count=1)
    body = chat({"seed": 5}, stream=True)
    failed = client.post("/inference/chat", json=body)
    names, _ = _native(failed.text)
    assert names[-1] == "error" and "done" not in names
    again = client.post("/inference/chat", json=body)
    assert again.headers["x-cache"] == "MISS"
    assert _native(again.text)[0][-1] == "done"
    assert stack.sim.requests("/api/chat") == 2
    assert client.post("/inference/chat", json=body).headers["x-cache"] == "HIT"


def test_answers_larger_than_the_limit_are_not_cached(
    spawn: Spawn, redis_server: RedisServer, stack: Stack
) -> None:
    small = start_inference(
        spawn, [stack.sim.url], redis_server.url(0), INFERENCE_CACHE_MAX_BYTES="64"
    )
    stack.sim.reset()
    with httpx.Client(base_url=small.url, headers=ident("inference"), timeout=10) as http:
        body = chat({"seed": 1})
        for _ in range(2):
            assert http.post("/inference/chat", json=body).headers["x-cache"] == "MISS"
    assert stack.sim.requests("/api/chat") == 2


def test_websocket_and_openai_usage_chunk_are_served_from_the_cache(
    client: httpx.Client, stack: Stack
) -> None:
    body = chat({"seed": 21})
    fresh = client.post("/inference/chat", json=body).json()
    with ws_connect(stack.service.ws + "/inference/ws", additional_headers=ident()) as ws:
        ws.send(json.dumps(body))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] not in ("done", "error"):
            events.append(json.loads(ws.recv(timeout=5)))
    tokens = [e["content"] for e in events if e["type"] == "token"]
    assert len(tokens) >= 2 and "".join(tokens) == fresh["message"]["content"]
    oai = client.post(
        "/v1/chat/completions",
        json={
            "model": "llama3.2",
            "messages": body["messages"],
            "seed": 21,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert oai.headers["x-cache"] == "HIT"
    usage = [d for _, d in sse_events(oai.text) if isinstance(d, dict) and d.get("usage")]
    assert usage[-1]["usage"]["completion_tokens"] == fresh["usage"]["completion_tokens"]
    assert stack.sim.requests("/api/chat") == 1
