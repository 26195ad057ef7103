"""OpenAI (``/v1``) and Ollama (``/api``) wire formats, with the official clients."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from ollama_sim.tokens import count_tokens
from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import (
    Stack,
    assert_problem,
    ident,
    start_stack,
)

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    return start_stack(module_spawn, redis_server.url(0), "sim-wire")


@pytest.fixture
def headers(stack: Stack) -> dict[str, str]:
    stack.sim.reset()
    return ident("inference", "admin")


@pytest.fixture
def oai(stack: Stack, headers: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.service.url + "/v1", api_key="unused", default_headers=headers
    )


@pytest.fixture
def oll(stack: Stack, headers: dict[str, str]) -> ollama.Client:
    return ollama.Client(host=stack.service.url, headers=headers)


# --- OpenAI -----------------------------------------------------------------------------


def _disconnect_after_first_token(stack: Stack, path: str, body: dict[str, object]) -> None:
    """Stream ``body`` to ``path``, hang up after the first token; the simulator must see it."""
    stack.sim.config(token_delay_ms=50)
    with httpx.Client(base_url=stack.service.url, headers=ident(), timeout=10) as client:
        with client.stream("POST", path, json=body) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                    break
    stack.sim.wait_stats(lambda s: s["cancelled"] == 1)
    assert stack.sim.stats()["completed"] == 0


def test_openai_stream_disconnect_cancels_upstream(stack: Stack, headers: dict[str, str]) -> None:
    body = {"model": "llama3.2", "messages": MESSAGES, "stream": True}
    _disconnect_after_first_token(stack, "/v1/chat/completions", body)


def test_ollama_stream_disconnect_cancels_upstream(stack: Stack, headers: dict[str, str]) -> None:
    body = {"model": "llama3.2", "messages": MESSAGES, "stream": True}
    _disconnect_after_first_token(stack, "/api/chat", body)


def test_openai_chat(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(model="llama3.2", messages=MESSAGES)  # type: ignore[arg-type]
    text = result.choices[0].message.content or ""
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.prompt_tokens == 6
    assert result.usage.completion_tokens == count_tokens(text) == 24


def test_openai_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="llama3.2",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=7,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert count_tokens(text) == 7
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 7)


def test_openai_raw_sse_ends_with_done(stack: Stack, headers: dict[str, str]) -> None:
    resp = httpx.post(
        stack.service.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": MESSAGES, "stream": True},
        headers=headers,
    )
    lines = [line for line in resp.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


def test_openai_completions(oai: openai.OpenAI) -> None:
    result = oai.completions.create(model="llama3.2", prompt="Once upon", max_tokens=4)
    assert count_tokens(result.choices[0].text) == 4
    assert result.usage is not None and result.usage.prompt_tokens == 2
    stream = oai.completions.create(model="llama3.2", prompt="Once upon", max_tokens=4, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == result.choices[0].text


def test_openai_embeddings_and_models(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="nomic-embed-text", input=["a cat", "a dog"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 768
    assert result.usage.prompt_tokens == 4
    floats = oai.embeddings.create(model="nomic-embed-text", input="a cat", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, abs=1e-6)
    ids = [m.id for m in oai.models.list()]
    assert "llama3.2:latest" in ids


def test_openai_errors(oai: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.UnprocessableEntityError):
        oai.chat.completions.create(model="llama3.2", messages=MESSAGES, temperature=5)  # type: ignore[arg-type]
    assert_problem(httpx.get(stack.service.url + "/v1/models"), 401)


def test_openai_mid_stream_error(oai: openai.OpenAI, stack: Stack) -> None:
    stack.sim.config(fail_mode="error_after_tokens", fail_after_tokens=2)
    stream = oai.chat.completions.create(model="llama3.2", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError):
        list(stream)


# --- Ollama -----------------------------------------------------------------------------


def test_ollama_chat_generate(oll: ollama.Client) -> None:
    reply = oll.chat(model="llama3.2", messages=MESSAGES)
    assert reply.message.role == "assistant"
    assert reply.prompt_eval_count == 6 and reply.eval_count == 24
    pieces = [c.message.content for c in oll.chat(model="llama3.2", messages=MESSAGES, stream=True)]
    assert "".join(p or "" for p in pieces) == reply.message.content
    gen = oll.generate(model="llama3.2", prompt="Why is the sky blue?", options={"num_predict": 3})
    assert gen.eval_count == 3 and gen.done_reason == "length"
    streamed = list(oll.generate(model="llama3.2", prompt="Why?", stream=True))
    assert streamed[-1].done


def test_ollama_embed_list_show_ps_version(
    oll: ollama.Client, stack: Stack, headers: dict[str, str]
) -> None:
    embedded = oll.embed(model="nomic-embed-text", input=["x y", "z"])
    assert len(embedded.embeddings) == 2
    names = [m.model for m in oll.list().models]
    assert "llama3.2:latest" in names
    assert oll.show("llama3.2").modelinfo is not None
    oll.generate(model="llama3.2", prompt="hi")
    assert any(m.model == "llama3.2:latest" for m in oll.ps().models)
    version = httpx.get(stack.service.url + "/api/version", headers=headers).json()
    assert version["version"].endswith("-sim")


def test_ollama_pull_delete(oll: ollama.Client) -> None:
    statuses = [p.status for p in oll.pull("tiny-model:1b", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "tiny-model:1b" in [m.model for m in oll.list().models]
    oll.delete("tiny-model:1b")
    with pytest.raises(ollama.ResponseError):
        oll.delete("tiny-model:1b")


def test_ollama_errors(oll: ollama.Client, stack: Stack, headers: dict[str, str]) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        oll.chat(model="nope", messages=MESSAGES)
    assert info.value.status_code == 404
    # the client shows Ollama's `error` member: the problem's sentence, not a JSON document
    assert info.value.error.startswith("Model 'nope' not found. Available models:")
    with pytest.raises(ollama.ResponseError) as info:
        oll.chat(model="llama3.2", messages=[])  # type: ignore[arg-type]
    assert info.value.status_code == 422 and info.value.error.startswith("Invalid request.")
    raw = httpx.post(stack.service.url + "/api/show", json={"model": "nope"}, headers=headers)
    problem = raw.json()
    assert raw.headers["content-type"] == "application/problem+json"
    assert problem["status"] == 404 and problem["error"] == problem["detail"]
    native = httpx.post(
        stack.service.url + "/inference/chat", json={"model": "nope", "messages": MESSAGES},
        headers=headers,
    )  # fmt: skip
    assert native.status_code == 404 and "error" not in native.json()  # only on /api/*
    stack.sim.config(fail_mode="error_after_tokens", fail_after_tokens=2)
    with pytest.raises(ollama.ResponseError):
        list(oll.chat(model="llama3.2", messages=MESSAGES, stream=True))


def test_api_usage_recorded(stack: Stack, headers: dict[str, str], oll: ollama.Client) -> None:
    oll.chat(model="llama3.2", messages=MESSAGES)
    list(oll.chat(model="llama3.2", messages=MESSAGES, stream=True))
    report = httpx.get(stack.service.url + "/inference/usage", headers=headers).json()
    assert report["totals"]["llama3.2:latest"] == {
        "prompt_tokens": 12,
        "completion_tokens": 48,
        "requests": 2,
    }
