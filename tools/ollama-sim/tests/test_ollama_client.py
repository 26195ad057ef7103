"""The official ``ollama`` Python client works against the simulator unchanged."""

from __future__ import annotations

import pytest

from simtools import Sim

ollama = pytest.importorskip("ollama")


def test_official_client_roundtrip(sim: Sim) -> None:
    client = ollama.Client(host=sim.base_url)
    names = [m.model for m in client.list().models]
    assert "llama3.2:latest" in names and "nomic-embed-text:latest" in names

    gen = client.generate(model="llama3.2", prompt="Why is the sky blue?", options={"seed": 1})
    assert gen.done and gen.response and gen.eval_count == 24
    assert gen.prompt_eval_count == 6

    chunks = list(
        client.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            options={"num_predict": 5},
        )
    )
    assert len(chunks) == 6 and chunks[-1].done and chunks[-1].done_reason == "length"
    assert all(c.message.role == "assistant" for c in chunks)

    emb = client.embed(model="nomic-embed-text", input=["a b", "c d"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 768

    shown = client.show("llama3.2")
    assert shown.details is not None and shown.details.family == "llama"
    assert [m.model for m in client.ps().models] == ["llama3.2:latest", "nomic-embed-text:latest"]

    progress = [p.status for p in client.pull("tinyllama", stream=True)]
    assert progress[0] == "pulling manifest" and progress[-1] == "success"
    assert client.copy("tinyllama", "tiny2").status == "success"
    assert client.delete("tiny2").status == "success"


def test_official_client_surfaces_errors(sim: Sim) -> None:
    client = ollama.Client(host=sim.base_url)
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    assert "model 'ghost' not found" in missing.value.error

    sim.config(fail_mode="error_after_tokens", fail_after_tokens=2)
    with pytest.raises(ollama.ResponseError) as mid_stream:
        list(client.generate(model="llama3.2", prompt="x", stream=True))
    assert "simulated failure after 2 tokens" in mid_stream.value.error
