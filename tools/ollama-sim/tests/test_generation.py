"""/api/generate and /api/chat: wire shape, streaming, determinism, counts, formats."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any

from ollama_sim.tokens import count_tokens
from simtools import Sim, stream_ndjson

PROMPT = "Why is the sky blue?"
STAT_KEYS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def _gen(sim: Sim, **body: Any) -> dict[str, Any]:
    r = sim.client.post("/api/generate", json={"model": "llama3.2", "stream": False, **body})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def _chat(sim: Sim, content: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    r = sim.client.post(
        "/api/chat", json={"model": "llama3.2", "messages": messages, "stream": False, **body}
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_tokenizer_rule_is_pinned() -> None:
    assert count_tokens(PROMPT) == 6
    assert count_tokens("hello,  world!!") == 5
    assert count_tokens("   ") == 0
    assert count_tokens("snake_case x2") == 2


def test_generate_stream_shape_and_counts(sim: Sim) -> None:
    r, lines = stream_ndjson(sim.client, "/api/generate", {"model": "llama3.2", "prompt": PROMPT})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    *chunks, final = [obj for _, obj in lines]
    assert len(chunks) == 24  # default_num_predict
    for chunk in chunks:
        assert set(chunk) == {"model", "created_at", "response", "done"}
        assert chunk["model"] == "llama3.2" and chunk["done"] is False
        assert chunk["response"]
        datetime.fromisoformat(chunk["created_at"])
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["response"] == ""
    assert final["prompt_eval_count"] == count_tokens(PROMPT) == 6
    assert final["eval_count"] == len(chunks)
    for key in STAT_KEYS:
        assert isinstance(final[key], int) and final[key] > 0, key
    assert final["total_duration"] >= final["eval_duration"]
    assert isinstance(final["context"], list) and all(isinstance(t, int) for t in final["context"])
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]
    text = "".join(c["response"] for c in chunks)
    assert count_tokens(text) == final["eval_count"]


def test_chat_stream_shape_and_counts(sim: Sim) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there, model!"},
    ]
    r, lines = stream_ndjson(
        sim.client, "/api/chat", {"model": "llama3.2:latest", "messages": messages}
    )
    assert r.headers["content-type"] == "application/x-ndjson"
    *chunks, final = [obj for _, obj in lines]
    for chunk in chunks:
        assert set(chunk) == {"model", "created_at", "message", "done"}
        assert chunk["message"]["role"] == "assistant" and chunk["done"] is False
        assert chunk["model"] == "llama3.2:latest"
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert "context" not in final
    assert final["prompt_eval_count"] == 4 + 5 == sum(count_tokens(m["content"]) for m in messages)
    assert final["eval_count"] == len(chunks)
    for key in STAT_KEYS:
        assert isinstance(final[key], int) and final[key] > 0, key


def test_non_stream_equals_stream_and_is_deterministic(sim: Sim) -> None:
    _, lines = stream_ndjson(sim.client, "/api/generate", {"model": "llama3.2", "prompt": PROMPT})
    streamed = "".join(obj["response"] for _, obj in lines[:-1])
    r = sim.client.post(
        "/api/generate", json={"model": "llama3.2", "prompt": PROMPT, "stream": False}
    )
    assert r.headers["content-type"].startswith("application/json")
    whole = r.json()
    assert whole["response"] == streamed
    assert whole["done"] is True and whole["eval_count"] == len(lines) - 1
    assert whole["context"] == lines[-1][1]["context"]
    assert _gen(sim, prompt=PROMPT)["response"] == streamed
    # "llama3.2" and "llama3.2:latest" are the same model -> same text
    assert _gen(sim, model="llama3.2:latest", prompt=PROMPT)["response"] == streamed


def test_seed_and_prompt_change_output(sim: Sim) -> None:
    a1 = _gen(sim, prompt=PROMPT, options={"seed": 1})["response"]
    a2 = _gen(sim, prompt=PROMPT, options={"seed": 1})["response"]
    b = _gen(sim, prompt=PROMPT, options={"seed": 2})["response"]
    c = _gen(sim, prompt="Why is grass green?", options={"seed": 1})["response"]
    d = _gen(sim, model="qwen2.5-coder:1.5b", prompt=PROMPT, options={"seed": 1})["response"]
    assert a1 == a2
    assert len({a1, b, c, d}) == 4
    first = _chat(sim, "hi", options={"seed": 7})["message"]["content"]
    assert first == _chat(sim, "hi", options={"seed": 7})["message"]["content"]
    assert first != _chat(sim, "hi", options={"seed": 8})["message"]["content"]


def test_num_predict_controls_length(sim: Sim) -> None:
    _, lines = stream_ndjson(
        sim.client,
        "/api/generate",
        {"model": "llama3.2", "prompt": PROMPT, "options": {"num_predict": 5}},
    )
    assert len(lines) == 6
    assert lines[-1][1]["eval_count"] == 5
    assert lines[-1][1]["done_reason"] == "length"
    big = _gen(sim, prompt=PROMPT, options={"num_predict": 100_000})
    assert big["eval_count"] == 4096 and big["done_reason"] == "length"
    assert _gen(sim, prompt=PROMPT, options={"num_predict": -1})["eval_count"] == 24
    sim.config(default_num_predict=7)
    out = _gen(sim, prompt=PROMPT)
    assert out["eval_count"] == 7 and out["done_reason"] == "stop"


def test_stop_strings_cut_output(sim: Sim) -> None:
    full = _gen(sim, prompt=PROMPT, options={"num_predict": 20})
    words = full["response"].split()
    stop = words[6]
    expected = full["response"][: full["response"].index(stop)]
    cut = _gen(sim, prompt=PROMPT, options={"num_predict": 20, "stop": [stop, "zzz-never"]})
    assert cut["response"] == expected
    assert cut["done_reason"] == "stop"
    assert cut["eval_count"] == count_tokens(expected) < 20
    single = _gen(sim, prompt=PROMPT, options={"num_predict": 20, "stop": stop})
    assert single["response"] == expected


def test_tokens_are_streamed_separately_and_spaced(sim: Sim) -> None:
    sim.config(token_delay_ms=50)
    start = time.monotonic()
    _, lines = stream_ndjson(
        sim.client,
        "/api/generate",
        {"model": "llama3.2", "prompt": PROMPT, "options": {"num_predict": 5}},
    )
    times = [t for t, _ in lines[:-1]]
    assert len(times) == 5
    assert times[-1] - times[0] >= 0.15
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.03 for g in gaps), gaps
    assert times[0] - start < 0.15  # first token is not delayed by token_delay_ms
    final = lines[-1][1]
    assert final["eval_duration"] >= 0.15e9
    assert final["eval_count"] / final["eval_duration"] * 1e9 < 30  # ~20 tok/s at 50 ms/token


def test_first_token_delay(sim: Sim) -> None:
    sim.config(first_token_delay_ms=200)
    start = time.monotonic()
    _, lines = stream_ndjson(
        sim.client,
        "/api/chat",
        {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]},
    )
    assert lines[0][0] - start >= 0.18
    assert lines[-1][1]["prompt_eval_duration"] >= 0.18e9


def test_load_delay_only_when_cold(sim: Sim) -> None:
    sim.config(load_delay_ms=150)
    cold = _gen(sim, prompt="a")
    warm = _gen(sim, prompt="b")
    assert cold["load_duration"] >= 0.14e9
    assert warm["load_duration"] < 0.05e9


def test_empty_prompt_and_messages_load_model(sim: Sim) -> None:
    r = sim.client.post("/api/generate", json={"model": "llama3.2"})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"model", "created_at", "response", "done", "done_reason"}
    assert body["response"] == "" and body["done"] is True and body["done_reason"] == "load"
    r = sim.client.post("/api/chat", json={"model": "qwen2.5-coder:1.5b", "messages": []})
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": ""}
    assert body["done_reason"] == "load" and body["done"] is True
    loaded = {m["name"] for m in sim.client.get("/api/ps").json()["models"]}
    assert loaded == {"llama3.2:latest", "qwen2.5-coder:1.5b"}


def test_raw_generate_has_no_context(sim: Sim) -> None:
    assert "context" not in _gen(sim, prompt="[INST] hi [/INST]", raw=True)
    with_ctx = _gen(sim, prompt="hi", context=[1, 2, 3])
    assert with_ctx["context"][:3] == [1, 2, 3]
    assert with_ctx["prompt_eval_count"] == 1 + 3
