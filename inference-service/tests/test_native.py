"""Native ``/inference/*`` API against a real simulator, service process and Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from ollama_sim.tokens import count_tokens
from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import (
    SimHandle,
    Stack,
    assert_problem,
    ident,
    sse_events,
    start_stack,
)

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    return start_stack(
        module_spawn, redis_server.url(0), "sim-native", INFERENCE_OLLAMA_READ_TIMEOUT_S="1.5"
    )


@pytest.fixture
def sim(stack: Stack) -> SimHandle:
    stack.sim.reset()
    return stack.sim


@pytest.fixture
def client(stack: Stack, sim: SimHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.service.url, headers=ident("inference"), timeout=10) as c:
        yield c


def test_no_identity_is_401(stack: Stack) -> None:
    resp = httpx.post(stack.service.url + "/inference/chat", json=CHAT)
    assert_problem(resp, 401)


def test_missing_scope_is_403(stack: Stack) -> None:
    resp = httpx.post(stack.service.url + "/inference/chat", json=CHAT, headers=ident("memory"))
    assert_problem(resp, 403)


def test_chat_json_counts_match_the_simulator(client: httpx.Client) -> None:
    resp = client.post("/inference/chat", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["message"]["role"] == "assistant"
    assert body["usage"]["prompt_tokens"] == count_tokens("Why is the sky blue?") == 6
    assert body["usage"]["completion_tokens"] == count_tokens(body["message"]["content"]) == 24
    assert body["done_reason"] == "stop"


def test_chat_stream_sse_events(client: httpx.Client) -> None:
    resp = client.post("/inference/chat", json={**CHAT, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    tokens = [d["content"] for e, d in events if e == "token"]
    assert len(tokens) == 24
    assert events[-2] == ("usage", {"prompt_tokens": 6, "completion_tokens": 24})
    assert events[-1] == ("done", {"done_reason": "stop"})
    whole = client.post("/inference/chat", json=CHAT).json()["message"]["content"]
    assert "".join(tokens) == whole


def test_generate_json_and_stream(client: httpx.Client) -> None:
    body = {
        "model": "qwen2.5-coder:1.5b",
        "prompt": "def add(a, b):",
        "options": {"num_predict": 5},
    }
    resp = client.post("/inference/generate", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"] == {"prompt_tokens": 8, "completion_tokens": 5}
    assert resp.json()["done_reason"] == "length"
    events = sse_events(client.post("/inference/generate", json={**body, "stream": True}).text)
    assert [e for e, _ in events].count("token") == 5
    assert events[-1] == ("done", {"done_reason": "length"})


def test_usage_ledger_equals_simulator_counts(client: httpx.Client) -> None:
    a = client.post("/inference/chat", json=CHAT).json()["usage"]
    client.post("/inference/chat", json={**CHAT, "stream": True}).raise_for_status()
    g = client.post(
        "/inference/generate",
        json={"model": "qwen2.5-coder:1.5b", "prompt": "hi there", "stream": True},
    )
    g.raise_for_status()
    report = client.get("/inference/usage").json()
    totals = report["totals"]
    assert totals["llama3.2:latest"] == {
        "prompt_tokens": 2 * a["prompt_tokens"],
        "completion_tokens": 2 * a["completion_tokens"],
        "requests": 2,
    }
    assert totals["qwen2.5-coder:1.5b"] == {
        "prompt_tokens": 2,
        "completion_tokens": 24,
        "requests": 1,
    }
    assert len(report["days"]) == 1


def test_embed_batch(client: httpx.Client) -> None:
    resp = client.post(
        "/inference/embed", json={"model": "nomic-embed-text", "input": ["a cat", "the dog sat"]}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["embeddings"]) == 2 and len(body["embeddings"][0]) == 768
    assert body["usage"]["prompt_tokens"] == 5


@pytest.mark.parametrize(
    ("body", "exact"),
    [
        ({"model": "llama3.2", "text": "Why is the sky blue?"}, True),
        ({"model": "llama3.2", "messages": [{"role": "user", "content": "Hi, you!"}]}, True),
        ({"model": "nomic-embed-text", "text": "one two three"}, True),
    ],
)
def test_token_count(client: httpx.Client, body: dict[str, object], exact: bool) -> None:
    resp = client.post("/inference/tokens/count", json=body)
    assert resp.status_code == 200, resp.text
    text = str(body.get("text") or "Hi, you!")
    assert resp.json()["tokens"] == count_tokens(text)
    assert resp.json()["exact"] is exact


def test_models_list_show_loaded(client: httpx.Client) -> None:
    names = [m["name"] for m in client.get("/inference/models").json()["models"]]
    assert {"llama3.2:latest", "qwen2.5-coder:1.5b", "nomic-embed-text:latest"} <= set(names)
    shown = client.get("/inference/models/llama3.2").json()
    assert shown["model_info"]["llama.context_length"] == 8192
    client.post("/inference/chat", json=CHAT).raise_for_status()
    loaded = client.get("/inference/models/loaded").json()["models"]
    assert any(m["name"] == "llama3.2:latest" for m in loaded)


def test_unknown_model_404_names_available(client: httpx.Client) -> None:
    body = assert_problem(client.post("/inference/chat", json={**CHAT, "model": "nope:1b"}), 404)
    assert "llama3.2:latest" in body["detail"]
    assert "llama3.2:latest" in body["available_models"]
    assert_problem(client.get("/inference/models/nope"), 404)


@pytest.mark.parametrize(
    "patch",
    [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"options": {"temperature": 3}},
        {"options": {"temperature": -0.1}},
        {"options": {"num_predict": -3}},
        {"options": {"num_predict": 100000}},
        {"options": {"num_ctx": 9000}},  # llama3.2's context is 8192
        {"model": ""},
    ],
)
def test_bad_input_is_422(client: httpx.Client, patch: dict[str, object]) -> None:
    assert_problem(client.post("/inference/chat", json={**CHAT, **patch}), 422)


def test_pull_and_delete_need_admin(client: httpx.Client, stack: Stack) -> None:
    assert_problem(client.post("/inference/models/pull", json={"model": "tiny:1b"}), 403)
    admin = ident("inference", "admin")
    resp = httpx.post(
        stack.service.url + "/inference/models/pull", json={"model": "tiny:1b"}, headers=admin
    )
    events = sse_events(resp.text)
    assert events[0][0] == "progress" and events[-1] == ("done", {"status": "success"})
    assert "tiny:1b" in [m["name"] for m in client.get("/inference/models").json()["models"]]
    url = stack.service.url + "/inference/models/tiny:1b"
    assert httpx.delete(url, headers=admin).status_code == 204
    assert_problem(httpx.delete(url, headers=admin), 404)


def test_mid_stream_failure_ends_with_error_event(client: httpx.Client, sim: SimHandle) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=3, token_delay_ms=5)
    start = time.monotonic()
    resp = client.post("/inference/chat", json={**CHAT, "stream": True})
    elapsed = time.monotonic() - start
    events = sse_events(resp.text)
    assert [e for e, _ in events] == ["token"] * 3 + ["error"]
    assert events[-1][1]["status"] == 502
    assert elapsed < 1.0
    assert sim.requests("/api/chat") == 1  # never retried after tokens


def test_retries_before_first_token(client: httpx.Client, sim: SimHandle) -> None:
    sim.config(fail_mode="error_500", fail_count=2)
    resp = client.post("/inference/chat", json={**CHAT, "stream": True})
    assert sse_events(resp.text)[-1][0] == "done"
    assert sim.requests("/api/chat") == 3


def test_backend_5xx_after_retries_is_503(client: httpx.Client, sim: SimHandle) -> None:
    sim.config(fail_mode="error_500", fail_count=-1)
    resp = client.post("/inference/chat", json=CHAT)
    assert_problem(resp, 503)
    assert "retry-after" in resp.headers
    assert sim.requests("/api/chat") == 4  # 1 + 3 retries
    sim.config(fail_mode="none")
    time.sleep(0.1)


def test_client_disconnect_cancels_upstream(stack: Stack, sim: SimHandle) -> None:
    sim.config(token_delay_ms=50)
    with httpx.Client(base_url=stack.service.url, headers=ident(), timeout=10) as c:
        with c.stream("POST", "/inference/chat", json={**CHAT, "stream": True}) as resp:
            for line in resp.iter_lines():
                if line.startswith("event: token"):
                    break
    sim.wait_stats(lambda s: s["cancelled"] == 1)


def test_priority_header_and_body_are_clamped(client: httpx.Client) -> None:
    resp = client.post(
        "/inference/chat", json={**CHAT, "priority": 42}, headers={"X-Priority": "-3"}
    )
    assert resp.status_code == 200


def test_websocket_chat_and_cancel(stack: Stack, sim: SimHandle) -> None:
    with ws_connect(stack.service.ws + "/inference/ws", additional_headers=ident()) as ws:
        ws.send(json.dumps(CHAT))
        kinds = []
        while True:
            event = json.loads(ws.recv(timeout=5))
            kinds.append(event["type"])
            if event["type"] in ("done", "error"):
                break
        assert kinds[-2:] == ["usage", "done"] and kinds.count("token") == 24
        sim.config(token_delay_ms=50)
        ws.send(json.dumps(CHAT))
        assert json.loads(ws.recv(timeout=5))["type"] == "token"
        ws.send(json.dumps({"type": "cancel"}))
        while (event := json.loads(ws.recv(timeout=5)))["type"] == "token":
            pass
        assert event == {"type": "done", "done_reason": "cancelled"}
    sim.wait_stats(lambda s: s["cancelled"] == 1)


def test_websocket_without_identity_is_refused(stack: Stack) -> None:
    with pytest.raises(Exception, match=r"403|rejected"):
        with ws_connect(stack.service.ws + "/inference/ws"):
            pass


def test_hung_backend_is_503_without_retry(client: httpx.Client, sim: SimHandle) -> None:
    sim.config(fail_mode="hang", fail_count=1)
    start = time.monotonic()
    assert_problem(client.post("/inference/chat", json=CHAT), 503)
    assert time.monotonic() - start < 3
    assert sim.requests("/api/chat") == 1


def test_token_metrics_are_exported(client: httpx.Client, stack: Stack) -> None:
    client.post("/inference/chat", json=CHAT).raise_for_status()
    text = httpx.get(stack.service.url + "/metrics").text
    assert 'switchboard_inference_tokens_total{kind="completion",model="llama3.2:latest"}' in text
    assert 'switchboard_inference_tokens_total{kind="prompt",model="llama3.2:latest"}' in text


def test_failed_pull_ends_with_error_event(stack: Stack, sim: SimHandle) -> None:
    resp = httpx.post(
        stack.service.url + "/inference/models/pull",
        json={"model": "doesnotexist:1b"},
        headers=ident("inference", "admin"),
    )
    events = sse_events(resp.text)
    assert events[0][0] == "progress"
    assert events[-1][0] == "error" and "does not exist" in events[-1][1]["detail"]


def test_websocket_bad_request_is_an_error_message(stack: Stack, sim: SimHandle) -> None:
    with ws_connect(stack.service.ws + "/inference/ws", additional_headers=ident()) as ws:
        ws.send(json.dumps({**CHAT, "messages": []}))
        event = json.loads(ws.recv(timeout=5))
        assert event["type"] == "error" and event["problem"]["status"] == 422
        ws.send(json.dumps({**CHAT, "model": "nope"}))
        event = json.loads(ws.recv(timeout=5))
        assert event["type"] == "error" and event["problem"]["status"] == 404


def test_websocket_second_request_while_streaming_is_refused(stack: Stack, sim: SimHandle) -> None:
    sim.config(token_delay_ms=30)
    with ws_connect(stack.service.ws + "/inference/ws", additional_headers=ident()) as ws:
        ws.send(json.dumps({**CHAT, "options": {"num_predict": 8}}))
        assert json.loads(ws.recv(timeout=5))["type"] == "token"
        ws.send(json.dumps(CHAT))  # a second generation while the first still streams
        events = []
        while not events or events[-1]["type"] != "done":
            events.append(json.loads(ws.recv(timeout=5)))
        refusals = [e for e in events if e["type"] == "error"]
        assert len(refusals) == 1 and refusals[0]["problem"]["status"] == 409
        assert "One generation at a time" in refusals[0]["problem"]["detail"]
        # the first reply went on to its end: 8 tokens in all, then usage and done
        assert sum(e["type"] == "token" for e in events) == 7
        assert events[-1] == {"type": "done", "done_reason": "length"}
        ws.send(json.dumps({**CHAT, "options": {"num_predict": 2}}))  # idle again: accepted
        event = json.loads(ws.recv(timeout=5))
        assert event["type"] == "token", event
    assert sim.requests("/api/chat") == 2
