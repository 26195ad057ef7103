"""/api/embed and legacy /api/embeddings: shape, determinism, meaning, truncation."""

from __future__ import annotations

import math
from typing import Any

from ollama_sim.embeddings import cosine, embed_text
from simtools import Sim


def _embed(sim: Sim, inputs: Any, **body: Any) -> dict[str, Any]:
    r = sim.client.post("/api/embed", json={"model": "nomic-embed-text", "input": inputs, **body})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_embed_shape_and_normalisation(sim: Sim) -> None:
    body = _embed(sim, "Why is the sky blue?")
    assert set(body) == {
        "model",
        "embeddings",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
    }
    assert body["model"] == "nomic-embed-text"
    assert len(body["embeddings"]) == 1
    vec = body["embeddings"][0]
    assert len(vec) == 768
    assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, rel_tol=1e-9)
    assert body["prompt_eval_count"] == 6
    assert body["total_duration"] > 0 and body["load_duration"] > 0


def test_embed_batch_similarity_carries_meaning(sim: Sim) -> None:
    a = "the cat sat on the warm mat"
    b = "a cat sat on a mat"
    c = "quarterly revenue grew strongly"
    vecs = _embed(sim, [a, b, c])["embeddings"]
    assert len(vecs) == 3
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2]) + 0.3
    assert cosine(vecs[0], vecs[0]) > 0.999999
    assert _embed(sim, a)["embeddings"][0] == vecs[0]  # deterministic
    assert _embed(sim, "THE CAT sat, on the warm mat!")["embeddings"][0] == vecs[0]  # lower-cased


def test_empty_text_is_fixed_unit_vector(sim: Sim) -> None:
    vec = _embed(sim, "")["embeddings"][0]
    assert vec[0] == 1.0 and sum(abs(x) for x in vec[1:]) == 0.0
    assert _embed(sim, [])["embeddings"] == []


def test_chat_model_embeddings_use_its_width(sim: Sim) -> None:
    r = sim.client.post("/api/embed", json={"model": "llama3.2", "input": "x"})
    assert len(r.json()["embeddings"][0]) == 3072


def test_dimensions_shortens_and_renormalises(sim: Sim) -> None:
    vec = _embed(sim, "alpha beta gamma delta", dimensions=256)["embeddings"][0]
    assert len(vec) == 256
    assert math.isclose(sum(x * x for x in vec), 1.0, rel_tol=1e-9)
    r = sim.client.post(
        "/api/embed", json={"model": "nomic-embed-text", "input": "x", "dimensions": 5000}
    )
    assert r.status_code == 400


def test_truncation(sim: Sim) -> None:
    long = " ".join(f"w{i}" for i in range(50))
    body = _embed(sim, long, options={"num_ctx": 10})
    assert body["prompt_eval_count"] == 10
    head = " ".join(f"w{i}" for i in range(10))
    assert body["embeddings"][0] == embed_text(head, 768)
    r = sim.client.post(
        "/api/embed",
        json={
            "model": "nomic-embed-text",
            "input": long,
            "truncate": False,
            "options": {"num_ctx": 10},
        },
    )
    assert r.status_code == 400
    assert r.json() == {"error": "input exceeds maximum context length"}
    big = "word " * 3000  # over nomic-embed-text's 2048 context
    assert _embed(sim, big)["prompt_eval_count"] == 2048


def test_legacy_embeddings(sim: Sim) -> None:
    r = sim.client.post(
        "/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hello world"}
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"embedding"}
    assert body["embedding"] == _embed(sim, "hello world")["embeddings"][0]
    empty = sim.client.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": ""})
    assert empty.json() == {"embedding": []}
    missing = sim.client.post("/api/embeddings", json={"model": "ghost", "prompt": "x"})
    assert missing.status_code == 404
