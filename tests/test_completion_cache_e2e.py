"""The gateway's completion cache (L1) through the real cluster: a repeated deterministic
completion is answered by the gateway without the inference service (its cache counters do
not move); streams replay as streams, several HTTP chunks, byte for byte what the miss sent,
on native SSE, OpenAI SSE and Ollama NDJSON; hits are charged to the caller's token budget
and refused with 429 once it is spent; a model delete through the gateway drops its
entries; non-deterministic completions never reach the cache."""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from switchboard_devtools.cluster import ClusterPlan
from tests.fixtures.cluster import TPM_TEST_LIMIT
from tests.support.auth_client import Login, new_user

MODEL = "llama3.2"


def _prompt() -> str:
    """A question no other test asked: each test starts with a cold cache."""
    return f"completion cache {secrets.token_hex(6)}"


def chat_body(prompt: str, *, stream: bool = False, model: str = MODEL) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        "options": {"temperature": 0, "num_predict": 8},
    }


def inference_cache_counts(cluster: ClusterPlan) -> dict[str, float]:
    text = httpx.get(cluster.url("inference") + "/metrics", timeout=10).text
    pattern = r'^switchboard_inference_response_cache_total\{result="(\w+)"\} ([\d.e+]+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.M)}


def raw_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[str, list[bytes]]:
    """POST over a plain socket; the response head and its body's HTTP/1.1 chunks exactly as
    framed on the wire (httpx would merge them), to see how a stream was sent."""
    parts = urlsplit(url)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks: list[bytes] = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head.decode("latin-1"), chunks


def header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


# --- served by the gateway ----------------------------------------------------------------


def test_a_repeated_deterministic_chat_is_answered_by_the_gateway(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    gateway = cluster.url("gateway") + "/inference/chat"
    body = chat_body(_prompt())
    miss = httpx.post(gateway, json=body, headers=cluster_user.headers, timeout=30)
    assert miss.status_code == 200, miss.text
    assert miss.headers["x-cache"] == "MISS"
    assert "x-cache-layer" not in miss.headers

    before = inference_cache_counts(cluster)
    hits = [httpx.post(gateway, json=body, headers=cluster_user.headers, timeout=30) for _ in "ab"]
    assert inference_cache_counts(cluster) == before  # the inference service was not asked
    for hit in hits:
        assert hit.status_code == 200
        assert (hit.headers["x-cache"], hit.headers["x-cache-layer"]) == ("HIT", "gateway")
        assert hit.json() == miss.json()
        assert hit.headers["content-type"] == miss.headers["content-type"]
        assert hit.headers["x-request-id"] != miss.headers["x-request-id"]

    # another user shares the entry (the answer depends on the request only)
    other = new_user(cluster.url("gateway"))
    shared = httpx.post(gateway, json=body, headers=other.headers, timeout=30)
    assert shared.headers["x-cache-layer"] == "gateway" and shared.json() == miss.json()

    # the client may still opt out: no-cache asks inference (its own cache answers)
    fresh = httpx.post(
        gateway, json=body, headers={**cluster_user.headers, "Cache-Control": "no-cache"}
    )
    assert fresh.headers.get("x-cache-layer") != "gateway"
    assert inference_cache_counts(cluster) != before


def test_non_deterministic_completions_are_never_cached(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    gateway = cluster.url("gateway") + "/inference/chat"
    body = {"model": MODEL, "messages": [{"role": "user", "content": _prompt()}],
            "options": {"temperature": 0.7, "num_predict": 8}}  # fmt: skip
    for _ in range(3):
        before = inference_cache_counts(cluster)
        answer = httpx.post(gateway, json=body, headers=cluster_user.headers, timeout=30)
        assert answer.status_code == 200
        assert answer.headers["x-cache"] == "BYPASS" and "x-cache-layer" not in answer.headers
        after = inference_cache_counts(cluster)
        assert after.get("bypass", 0) == before.get("bypass", 0) + 1  # inference answered


# --- streams --------------------------------------------------------------------------------

STREAMS = [
    ("/inference/chat", "text/event-stream", {}),
    ("/v1/chat/completions", "text/event-stream", {"stream_options": {"include_usage": True}}),
    ("/api/chat", "application/x-ndjson", {}),
]


@pytest.mark.parametrize(("path", "media", "extra"), STREAMS)
def test_a_cached_stream_replays_as_the_same_stream(
    cluster: ClusterPlan, cluster_user: Login, path: str, media: str, extra: dict[str, object]
) -> None:
    prompt = _prompt()
    if path.startswith("/v1/"):
        body: dict[str, object] = {"model": MODEL, "stream": True, "temperature": 0,
                                   "max_tokens": 8,
                                   "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    else:
        body = chat_body(prompt, stream=True)
    raw = json.dumps({**body, **extra}).encode()
    gateway = cluster.url("gateway")
    head, miss = raw_post(gateway, path, raw, cluster_user.headers)
    assert head.startswith("HTTP/1.1 200"), head
    assert header(head, "x-cache") == "MISS"

    before = inference_cache_counts(cluster)
    head, hit = raw_post(gateway, path, raw, cluster_user.headers)
    assert inference_cache_counts(cluster) == before
    assert header(head, "x-cache") == "HIT" and header(head, "x-cache-layer") == "gateway"
    assert (header(head, "content-type") or "").startswith(media)
    assert header(head, "x-accel-buffering") == "no"
    assert len(hit) >= 2  # a stream, chunk by chunk, not one blob
    assert b"".join(hit) == b"".join(miss)  # the same frames, byte for byte
    # every chunk is whole frames: a client's parser sees the same events
    end = b"\n\n" if media == "text/event-stream" else b"\n"
    assert all(chunk.endswith(end) for chunk in hit)


def test_an_openai_stream_without_usage_is_left_to_the_inference_cache(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    body = {"model": MODEL, "stream": True, "temperature": 0, "max_tokens": 8,
            "messages": [{"role": "user", "content": _prompt()}]}  # fmt: skip
    raw = json.dumps(body).encode()
    gateway = cluster.url("gateway")
    raw_post(gateway, "/v1/chat/completions", raw, cluster_user.headers)
    head, _ = raw_post(gateway, "/v1/chat/completions", raw, cluster_user.headers)
    # the gateway cannot charge what it cannot read: the inference cache answers and reports
    assert header(head, "x-cache") == "HIT" and header(head, "x-cache-layer") == "inference"


# --- token budgets --------------------------------------------------------------------------


def test_hits_are_charged_and_refused_once_the_budget_is_spent(
    cluster: ClusterPlan, budgeted_user: tuple[Login, str], budget_store: redis.Redis
) -> None:
    user, user_id = budgeted_user
    gateway = cluster.url("gateway") + "/inference/chat"
    body = chat_body(_prompt())
    miss = httpx.post(gateway, json=body, headers=user.headers, timeout=30)
    assert miss.status_code == 200 and miss.headers["x-cache"] == "MISS"
    usage = miss.json()["usage"]
    cost = usage["prompt_tokens"] + usage["completion_tokens"]
    # the miss's estimate is settled to its usage by the inference service's report
    deadline = time.monotonic() + 10
    while int(budget_store.get(f"gw:tb:{{u:{user_id}}}:t") or 0) != cost:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    used = cost
    while used + cost <= TPM_TEST_LIMIT:
        hit = httpx.post(gateway, json=body, headers=user.headers, timeout=30)
        assert hit.status_code == 200 and hit.headers["x-cache-layer"] == "gateway"
        used += cost  # each hit costs what the caller received, at once
        assert hit.headers["x-ratelimit-remaining-tokens"] == str(TPM_TEST_LIMIT - used)
    before = inference_cache_counts(cluster)
    refused = httpx.post(gateway, json=body, headers=user.headers, timeout=30)
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "x-cache" not in refused.headers
    assert inference_cache_counts(cluster) == before
    assert int(budget_store.get(f"gw:tb:{{u:{user_id}}}:t") or 0) == used


# --- invalidation -----------------------------------------------------------------------------


def test_a_model_delete_through_the_gateway_drops_its_cached_completions(
    cluster: ClusterPlan, cluster_user: Login, cluster_admin: Login
) -> None:
    gateway = cluster.url("gateway")
    model = f"cachetest-{secrets.token_hex(3)}"  # the simulator makes up any model it pulls
    pulled = httpx.post(
        gateway + "/inference/models/pull",
        json={"model": model},
        headers=cluster_admin.headers,
        timeout=30,
    )
    assert pulled.status_code == 200, pulled.text
    body = chat_body(_prompt(), model=model)
    chat = gateway + "/inference/chat"
    assert httpx.post(chat, json=body, headers=cluster_user.headers).headers["x-cache"] == "MISS"
    hit = httpx.post(chat, json=body, headers=cluster_user.headers)
    assert hit.headers["x-cache-layer"] == "gateway"

    deleted = httpx.delete(
        f"{gateway}/inference/models/{model}", headers=cluster_admin.headers, timeout=30
    )
    assert deleted.status_code in (200, 204), deleted.text
    gone = httpx.post(chat, json=body, headers=cluster_user.headers, timeout=30)
    assert gone.status_code == 404, gone.text  # not a stale answer of a model that is gone
    assert "x-cache-layer" not in gone.headers
