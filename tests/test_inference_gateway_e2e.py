"""The inference service's public API through the gateway, with real processes (the session's
``cluster``: auth, gateway, inference and the Ollama simulator) and a normal user's token.

Covers the native ``/inference/*`` routes and ``/code/analyze``, the OpenAI (``/v1``) and
Ollama (``/api``) wire formats raw and with the official ``openai`` / ``ollama`` clients,
refusals (401, 403, 404, 422), a model failing mid-stream (a terminal ``error`` event / line,
at once) and a client hanging up mid-stream (the simulator sees the cancel). Token counts
are the simulator's public tokeniser's (``ollama_sim.tokens.count_tokens``).

The simulator is shared by the whole session: tests that turn its knobs go through the
``sim`` fixture, which puts the configuration back as it found it; counters are read as
differences, never reset.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ollama_sim.models import normalize_name
from ollama_sim.tokens import count_tokens
from switchboard_devtools.cluster import ClusterPlan
from tests.support.auth_client import Login, new_user
from tests.support.responses import assert_problem, sse_events

MODEL = "llama3.2"
EMBEDDER = "nomic-embed-text"
CODER = "qwen2.5-coder:1.5b"
DEFAULT_MODELS = {"llama3.2:latest", "nomic-embed-text:latest", "qwen2.5-coder:1.5b"}
QUESTION = "Why is the sky blue?"  # 6 tokens for the simulator
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": QUESTION}]
OLLAMA_MESSAGES = [ollama.Message(role="user", content=QUESTION)]
TIMEOUT = 15.0


# --- helpers --------------------------------------------------------------------------------


class Sim:
    """The simulator's admin API (``/_sim/*``, not behind the gateway)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def config(self, **knobs: Any) -> dict[str, Any]:
        resp = httpx.post(self.url + "/_sim/config", json=knobs, timeout=5)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/_sim/stats", timeout=5).json())

    def wait_stats(self, ok: Callable[[dict[str, Any]], bool], within_s: float = 5.0) -> None:
        deadline = time.monotonic() + within_s
        while not ok(stats := self.stats()):
            if time.monotonic() > deadline:
                pytest.fail(f"simulator stats condition not met within {within_s}s: {stats}")
            time.sleep(0.02)


def requests_to(stats: dict[str, Any], path: str) -> int:
    return int(stats["requests"].get(path, 0))


def data_lines(text: str) -> list[str]:
    """The payloads of an OpenAI-style SSE body (``data: …`` lines only)."""
    lines = [line for line in text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines), text
    return [line[6:] for line in lines]


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def gateway(cluster: ClusterPlan) -> str:
    return cluster.url("gateway")


@pytest.fixture
def api(gateway: str, cluster_user: Login) -> Iterator[httpx.Client]:
    """A normal user's HTTP client of the gateway."""
    with httpx.Client(base_url=gateway, headers=cluster_user.headers, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def admin_api(gateway: str, cluster_admin: Login) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers=cluster_admin.headers, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture
def sim(cluster: ClusterPlan) -> Iterator[Sim]:
    """The session's simulator; whatever a test sets is put back afterwards."""
    handle = Sim(cluster.ollama)
    saved = httpx.get(handle.url + "/_sim/config", timeout=5).json()
    try:
        yield handle
    finally:
        handle.config(**saved)


@pytest.fixture
def oai(gateway: str, cluster_user: Login) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=gateway + "/v1", api_key=cluster_user.access_token, max_retries=0, timeout=TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
def oll(gateway: str, cluster_user: Login) -> ollama.Client:
    return ollama.Client(host=gateway, headers=cluster_user.headers, timeout=TIMEOUT)


# --- native API -----------------------------------------------------------------------------


def test_native_generate_json_and_stream(api: httpx.Client, sim: Sim) -> None:
    body = {"model": MODEL, "prompt": QUESTION, "options": {"num_predict": 5}}
    before = sim.stats()
    whole = api.post("/inference/generate", json=body)
    assert whole.status_code == 200, whole.text
    assert whole.headers["content-type"].startswith("application/json")
    assert whole.headers["x-cache"] == "BYPASS"  # not deterministic: never cached
    answer = whole.json()
    assert answer["usage"] == {"prompt_tokens": 6, "completion_tokens": 5}
    assert answer["done_reason"] == "length"
    text = answer["message"]["content"]
    assert count_tokens(text) == 5

    streamed = api.post("/inference/generate", json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert [e for e, _ in events] == ["token"] * 5 + ["usage", "done"]
    assert "".join(d["content"] for e, d in events if e == "token") == text
    assert events[-2][1] == {"prompt_tokens": 6, "completion_tokens": 5}
    assert events[-1][1] == {"done_reason": "length"}
    assert requests_to(sim.stats(), "/api/generate") - requests_to(before, "/api/generate") == 2


def test_native_embed_batch(api: httpx.Client) -> None:
    texts = ["the quick brown fox jumps", "a quick brown fox sleeps", "salt water in the ocean"]
    resp = api.post("/inference/embed", json={"model": EMBEDDER, "input": texts})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    vectors = body["embeddings"]
    assert len(vectors) == len(texts)
    assert {len(v) for v in vectors} == {768}
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-6) for v in vectors)
    # texts sharing words are closer than unrelated ones
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert body["usage"]["prompt_tokens"] == sum(count_tokens(t) for t in texts)
    single = api.post("/inference/embed", json={"model": EMBEDDER, "input": texts[0]}).json()
    assert single["embeddings"] == [pytest.approx(vectors[0], abs=1e-9)]


def test_native_token_count(api: httpx.Client, sim: Sim) -> None:
    before = sim.stats()
    text = api.post("/inference/tokens/count", json={"model": MODEL, "text": QUESTION})
    assert text.status_code == 200, text.text
    assert text.json()["tokens"] == count_tokens(QUESTION) == 6
    assert text.json()["exact"] is True
    chat = api.post(
        "/inference/tokens/count",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi, you!"}]},
    )
    assert chat.status_code == 200, chat.text
    assert (chat.json()["tokens"], chat.json()["exact"]) == (count_tokens("Hi, you!"), True)
    after = sim.stats()  # counted by the backend: one generate and one chat
    assert requests_to(after, "/api/generate") - requests_to(before, "/api/generate") == 1
    assert requests_to(after, "/api/chat") - requests_to(before, "/api/chat") == 1


def test_token_count_is_admitted_through_the_queue(
    api: httpx.Client, admin_api: httpx.Client
) -> None:
    """Counting asks the model, so it waits for a slot like any call to it: a model only
    ever counted has a queue in ``GET /inference/queue``."""
    model = f"counted-{secrets.token_hex(3)}:1b"
    pulled = admin_api.post("/inference/models/pull", json={"model": model})
    assert pulled.status_code == 200, pulled.text
    assert sse_events(pulled.text)[-1] == ("done", {"status": "success"})
    try:
        counted = api.post("/inference/tokens/count", json={"model": model, "text": "one two"})
        assert counted.status_code == 200, counted.text
        assert counted.json()["tokens"] == 2
        queues = api.get("/inference/queue").json()["queues"]
        assert model in [q["model"] for q in queues], queues
    finally:
        admin_api.delete(f"/inference/models/{model}")


def test_native_models_list_show_loaded(api: httpx.Client) -> None:
    listed = api.get("/inference/models")
    assert listed.status_code == 200, listed.text
    assert {m["name"] for m in listed.json()["models"]} >= DEFAULT_MODELS
    shown = api.get(f"/inference/models/{MODEL}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["model_info"]["llama.context_length"] == 8192
    assert shown.json()["details"]["family"] == "llama"
    assert api.post("/inference/chat", json=CHAT).status_code == 200
    loaded = api.get("/inference/models/loaded")
    assert loaded.status_code == 200, loaded.text
    assert "llama3.2:latest" in [m["name"] for m in loaded.json()["models"]]
    missing = assert_problem(api.get("/inference/models/nope-model"), 404)
    assert "llama3.2:latest" in missing["detail"]


def test_queue_snapshot_has_one_queue_per_model(api: httpx.Client, cluster: ClusterPlan) -> None:
    """``llama3.2`` and ``llama3.2:latest`` are one model (Ollama's naming rule): calls under
    either name share its slots, so the snapshot shows one queue for it."""
    for name in (MODEL, "llama3.2:latest"):
        resp = api.post("/inference/chat", json={**CHAT, "model": name})
        assert resp.status_code == 200, resp.text
    snap = api.get("/inference/queue")
    assert snap.status_code == 200, snap.text
    queues = snap.json()["queues"]
    mine = [q for q in queues if q["backend"] == cluster.ollama]
    llama = [q for q in mine if normalize_name(q["model"]) == "llama3.2:latest"]
    assert llama, queues
    for q in llama:  # both calls are over: their slots are free again
        assert q["capacity"] >= 1 and q["in_use"] == 0 and q["waiting"] == 0, q
        assert set(q["waiting_by_priority"]) == {str(p) for p in range(10)}
    seen = Counter(normalize_name(q["model"]) for q in mine)
    assert [m for m, n in seen.items() if n > 1] == [], queues


def test_usage_ledger_counts_both_spellings_as_one_model(gateway: str) -> None:
    user = new_user(gateway)
    with httpx.Client(base_url=gateway, headers=user.headers, timeout=TIMEOUT) as client:
        first = client.post("/inference/chat", json=CHAT)
        second = client.post("/inference/chat", json={**CHAT, "model": "llama3.2:latest"})
        assert first.status_code == second.status_code == 200
        spent = [r.json()["usage"] for r in (first, second)]
        deadline = time.monotonic() + 5
        while True:
            totals = client.get("/inference/usage").json()["totals"]
            if sum(t["requests"] for t in totals.values()) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert len(totals) == 1 and normalize_name(next(iter(totals))) == "llama3.2:latest", totals
    assert next(iter(totals.values())) == {
        "prompt_tokens": sum(u["prompt_tokens"] for u in spent),
        "completion_tokens": sum(u["completion_tokens"] for u in spent),
        "requests": 2,
    }


def test_code_analyze_valid_and_broken_python(api: httpx.Client) -> None:
    valid = "def f(x):\n    if x and x > 1:\n        return 1\n    return 0\n"
    resp = api.post("/code/analyze", json={"code": valid})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["language"] == "python" and body["static"]["analyzer"] == "python-ast"
    assert body["static"]["syntax_error"] is None
    assert body["static"]["lines"]["total"] == 4
    [func] = body["static"]["functions"]
    assert (func["name"], func["arguments"], func["complexity"]) == ("f", 1, 3)
    assert body["model"] == CODER  # reviewed by the default model through the simulator
    assert body["review_error"] is None and isinstance(body["review"]["summary"], str)

    broken = api.post(
        "/code/analyze",
        json={"code": "def f(x:\n    return 1\n", "filename": "broken.py", "review": False},
    )
    assert broken.status_code == 200, broken.text
    facts = broken.json()
    assert facts["language"] == "python"
    error = facts["static"]["syntax_error"]
    assert error["line"] == 1 and "never closed" in error["message"]
    assert facts["static"]["functions"] == [] and facts["static"]["lines"]["total"] == 2
    assert facts["review"] is None and facts["model"] is None

    assert_problem(api.post("/code/analyze", json={"code": "   "}), 422)
    assert_problem(api.post("/code/analyze", json={"code": "x = 1", "reveiw": False}), 422)


# --- OpenAI wire format, raw ----------------------------------------------------------------


def test_openai_completions_raw(api: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Once upon", "max_tokens": 4}
    resp = api.post("/v1/completions", json=body)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["object"] == "text_completion"
    text = answer["choices"][0]["text"]
    assert count_tokens(text) == 4 and answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}

    streamed = api.post("/v1/completions", json={**body, "stream": True})
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    payloads = data_lines(streamed.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_chat_stream_with_usage_raw(api: httpx.Client) -> None:
    body = {**CHAT, "stream": True, "max_tokens": 7, "stream_options": {"include_usage": True}}
    resp = api.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    payloads = data_lines(resp.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13}
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]]
    assert count_tokens("".join(deltas)) == 7
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_openai_embeddings_raw(api: httpx.Client) -> None:
    texts = ["a cat", "the dog sat"]
    resp = api.post("/v1/embeddings", json={"model": EMBEDDER, "input": texts})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert {len(d["embedding"]) for d in body["data"]} == {768}
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}


# --- Ollama wire format, raw ----------------------------------------------------------------


def test_ollama_generate_embed_raw(api: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": QUESTION, "options": {"num_predict": 4}}
    streamed = api.post("/api/generate", json=body)  # streaming is Ollama's default
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(streamed.text)
    assert [line["done"] for line in lines] == [False] * 4 + [True]
    final = lines[-1]
    assert (final["prompt_eval_count"], final["eval_count"]) == (6, 4)
    assert final["done_reason"] == "length"
    text = "".join(line["response"] for line in lines)

    whole = api.post("/api/generate", json={**body, "stream": False})
    assert whole.status_code == 200, whole.text
    assert whole.headers["content-type"].startswith("application/json")
    assert whole.json()["response"] == text and whole.json()["eval_count"] == 4

    embedded = api.post("/api/embed", json={"model": EMBEDDER, "input": ["x y", "z", "x y"]})
    assert embedded.status_code == 200, embedded.text
    vectors = embedded.json()["embeddings"]
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]
    assert embedded.json()["prompt_eval_count"] == 5


def test_ollama_model_routes_raw(api: httpx.Client) -> None:
    tags = api.get("/api/tags")
    assert tags.status_code == 200, tags.text
    assert {m["name"] for m in tags.json()["models"]} >= DEFAULT_MODELS
    shown = api.post("/api/show", json={"model": MODEL})
    assert shown.status_code == 200, shown.text
    assert shown.json()["model_info"]["llama.context_length"] == 8192
    assert "backend" not in shown.json()  # Ollama's shape, not the native one
    used = api.post("/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False})
    assert used.status_code == 200, used.text
    ps = api.get("/api/ps")
    assert ps.status_code == 200, ps.text
    assert "llama3.2:latest" in [m["model"] for m in ps.json()["models"]]
    version = api.get("/api/version")
    assert version.status_code == 200 and version.json()["version"].endswith("-sim")


def test_ollama_pull_and_delete_need_admin(
    api: httpx.Client, admin_api: httpx.Client, sim: Sim
) -> None:
    model = f"e2e-pulled-{secrets.token_hex(3)}:1b"
    before = sim.stats()
    for refused in (
        api.post("/api/pull", json={"model": model}),
        api.request("DELETE", "/api/delete", json={"model": model}),
    ):
        problem = assert_problem(refused, 403)
        assert problem["missing_scopes"] == ["admin"]
    after = sim.stats()  # refused before anything reached the model server
    for upstream in ("/api/pull", "/api/delete"):
        assert requests_to(after, upstream) == requests_to(before, upstream)

    pulled = admin_api.post("/api/pull", json={"model": model})
    assert pulled.status_code == 200, pulled.text
    assert pulled.headers["content-type"].startswith("application/x-ndjson")
    statuses = [line["status"] for line in ndjson(pulled.text)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert model in {m["name"] for m in api.get("/api/tags").json()["models"]}  # a user sees it

    deleted = admin_api.request("DELETE", "/api/delete", json={"model": model})
    assert deleted.status_code == 200, deleted.text
    assert model not in {m["name"] for m in api.get("/api/tags").json()["models"]}
    assert_problem(admin_api.request("DELETE", "/api/delete", json={"model": model}), 404)


# --- the official clients -------------------------------------------------------------------


def test_openai_client(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=MODEL, messages=MESSAGES)
    text = reply.choices[0].message.content or ""
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (6, count_tokens(text))
    assert reply.usage.completion_tokens == 24  # the simulator's default length

    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=7,
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert count_tokens(streamed) == 7 and text.startswith(streamed)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (6, 7)

    completion = oai.completions.create(model=MODEL, prompt="Once upon", max_tokens=4)
    assert count_tokens(completion.choices[0].text) == 4
    assert completion.usage is not None and completion.usage.prompt_tokens == 2

    embeddings = oai.embeddings.create(model=EMBEDDER, input=["a cat", "a dog"])
    assert [d.index for d in embeddings.data] == [0, 1]
    assert len(embeddings.data[0].embedding) == 768
    assert embeddings.usage.prompt_tokens == 4

    assert {m.id for m in oai.models.list()} >= DEFAULT_MODELS


def test_ollama_client(oll: ollama.Client) -> None:
    reply = oll.chat(model=MODEL, messages=OLLAMA_MESSAGES)
    assert reply.message.role == "assistant" and reply.done
    assert (reply.prompt_eval_count, reply.eval_count) == (6, 24)
    assert count_tokens(reply.message.content) == 24
    parts = list(oll.chat(model=MODEL, messages=OLLAMA_MESSAGES, stream=True))
    assert "".join(p.message.content or "" for p in parts) == reply.message.content
    assert parts[-1].done and parts[-1].eval_count == 24 and not any(p.done for p in parts[:-1])

    generated = oll.generate(model=MODEL, prompt=QUESTION, options={"num_predict": 3})
    assert (generated.eval_count, generated.done_reason) == (3, "length")
    assert count_tokens(generated.response) == 3

    embedded = oll.embed(model=EMBEDDER, input=["x y", "z"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 768

    assert {m.model for m in oll.list().models} >= DEFAULT_MODELS
    shown = oll.show(MODEL)
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert "llama3.2:latest" in [m.model for m in oll.ps().models]


# --- bad input --------------------------------------------------------------------------------


def test_unknown_model_is_404_naming_the_available_models(
    api: httpx.Client, oai: openai.OpenAI
) -> None:
    for path in ("/inference/chat", "/v1/chat/completions", "/api/chat"):
        problem = assert_problem(api.post(path, json={**CHAT, "model": "nope:1b"}), 404)
        assert "nope:1b" in problem["detail"] and "llama3.2:latest" in problem["detail"], path
        assert set(problem["available_models"]) >= DEFAULT_MODELS, path
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope:1b", messages=MESSAGES)


def test_ollama_client_errors_are_readable(oll: ollama.Client) -> None:
    """Ollama's clients show an answer's ``error`` member: a problem on ``/api/*`` carries
    one, so ``ResponseError`` reads as a message, not as a JSON document."""
    with pytest.raises(ollama.ResponseError) as info:
        oll.chat(model="nope:1b", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert "nope:1b" in info.value.error
    assert not info.value.error.lstrip().startswith("{"), info.value.error


def test_empty_messages_are_422(api: httpx.Client) -> None:
    for path in ("/inference/chat", "/v1/chat/completions", "/api/chat"):
        problem = assert_problem(api.post(path, json={**CHAT, "messages": []}), 422)
        assert "messages" in problem["detail"], path


def test_unauthenticated_calls_are_401(gateway: str) -> None:
    calls = [
        ("POST", "/inference/chat", CHAT),
        ("POST", "/inference/embed", {"model": EMBEDDER, "input": "x"}),
        ("GET", "/v1/models", None),
        ("GET", "/api/tags", None),
        ("POST", "/code/analyze", {"code": "x = 1"}),
    ]
    with httpx.Client(base_url=gateway, timeout=TIMEOUT) as anonymous:
        for method, path, body in calls:
            resp = anonymous.request(method, path, json=body)
            assert_problem(resp, 401)
            assert resp.headers["www-authenticate"].startswith("Bearer"), path
        forged = anonymous.get("/api/tags", headers={"Authorization": "Bearer not-a-token"})
        problem = assert_problem(forged, 401)
        # the gateway's own refusal on the Ollama wire format says {"error": …} too
        assert problem["error"] == problem["detail"]
        assert "error" not in anonymous.get("/v1/models").json()  # only on /api/*
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=gateway).list()
    assert info.value.status_code == 401 and not info.value.error.startswith("{")
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


# --- failures mid-stream ----------------------------------------------------------------------

STREAMS = ["/inference/chat", "/v1/chat/completions", "/api/chat"]


@pytest.mark.parametrize("path", STREAMS)
def test_a_mid_stream_failure_ends_the_stream_with_an_error(
    api: httpx.Client, sim: Sim, path: str
) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=3, fail_count=1)
    before = sim.stats()
    started = time.monotonic()
    resp = api.post(path, json={**CHAT, "stream": True}, timeout=10)
    assert time.monotonic() - started < 5  # ended at once, not by a timeout
    assert resp.status_code == 200, resp.text
    if path == "/inference/chat":
        events = sse_events(resp.text)
        assert [e for e, _ in events] == ["token"] * 3 + ["error"]
        problem = events[-1][1]
        assert problem["status"] == 502 and "after 3 tokens" in problem["detail"]
    elif path == "/v1/chat/completions":
        payloads = data_lines(resp.text)
        assert payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert all("choices" in c for c in chunks[:-1]) and len(chunks) == 4
        assert chunks[-1]["error"]["status"] == 502
    else:
        lines = ndjson(resp.text)
        assert [line.get("done") for line in lines] == [False] * 3 + [None]
        assert "after 3 tokens" in lines[-1]["error"]
    after = sim.stats()
    assert after["failed"] - before["failed"] == 1
    assert requests_to(after, "/api/chat") - requests_to(before, "/api/chat") == 1  # no retry


def test_the_openai_client_raises_on_a_mid_stream_failure(oai: openai.OpenAI, sim: Sim) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=2, fail_count=1)
    stream = oai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    received: list[str] = []

    def read_all() -> None:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError):
        read_all()
    assert count_tokens("".join(received)) == 2


def test_the_ollama_client_raises_on_a_mid_stream_failure(oll: ollama.Client, sim: Sim) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=2, fail_count=1)
    received: list[str] = []

    def read_all() -> None:
        for part in oll.chat(model=MODEL, messages=OLLAMA_MESSAGES, stream=True):
            received.append(part.message.content or "")

    with pytest.raises(ollama.ResponseError) as info:
        read_all()
    assert "after 2 tokens" in info.value.error
    assert count_tokens("".join(received)) == 2


@pytest.mark.parametrize("path", STREAMS)
def test_a_client_that_hangs_up_cancels_the_generation(
    gateway: str, cluster_user: Login, sim: Sim, path: str
) -> None:
    sim.config(token_delay_ms=50)  # 24 tokens: 1.2 s if nobody stops it
    before = sim.stats()
    with httpx.Client(base_url=gateway, headers=cluster_user.headers, timeout=10) as client:
        with client.stream("POST", path, json={**CHAT, "stream": True}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                compact = line.replace(" ", "")
                if '"content":"' in compact and '"content":""' not in compact:
                    break  # the first token: hang up
            else:
                pytest.fail("the stream ended before its first token")
    sim.wait_stats(lambda s: s["cancelled"] - before["cancelled"] == 1, within_s=3)
    assert sim.stats()["completed"] == before["completed"]
