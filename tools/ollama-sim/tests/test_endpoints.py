"""Shapes of the model-management endpoints, pull, ps/keep_alive and the admin API."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from simtools import Sim


def test_root_and_head(sim: Sim) -> None:
    r = sim.client.get("/")
    assert r.status_code == 200
    assert r.text == "Ollama is running"
    assert sim.client.head("/").status_code == 200


def test_version_marks_simulator(sim: Sim) -> None:
    r = sim.client.get("/api/version")
    assert r.status_code == 200
    assert r.json() == {"version": "0.12.0-sim"}


def test_banner_printed_on_start(sim: Sim) -> None:
    assert "OLLAMA SIMULATOR — simulated model, not a real LLM" in sim.stdout_path.read_text()


def test_tags_lists_catalogue(sim: Sim) -> None:
    models = {m["name"]: m for m in sim.client.get("/api/tags").json()["models"]}
    assert {"llama3.2:latest", "qwen2.5-coder:1.5b", "nomic-embed-text:latest"} <= set(models)
    llama = models["llama3.2:latest"]
    assert llama["model"] == "llama3.2:latest"
    assert llama["digest"] == hashlib.sha256(b"llama3.2:latest").hexdigest()
    assert llama["size"] > 1_000_000_000
    assert set(llama["details"]) >= {
        "format",
        "family",
        "families",
        "parameter_size",
        "quantization_level",
    }
    assert llama["details"]["format"] == "gguf"
    datetime.fromisoformat(llama["modified_at"])


def test_show_chat_and_embedding_models(sim: Sim) -> None:
    r = sim.client.post("/api/show", json={"model": "llama3.2"})
    assert r.status_code == 200
    body = r.json()
    assert {"modelfile", "parameters", "template", "details", "model_info"} <= set(body)
    assert body["model_info"]["llama.context_length"] == 8192
    assert "completion" in body["capabilities"]
    emb = sim.client.post("/api/show", json={"name": "nomic-embed-text"}).json()
    assert emb["capabilities"] == ["embedding"]
    assert emb["model_info"]["nomic-bert.embedding_length"] == 768


def test_show_unknown_model_404(sim: Sim) -> None:
    r = sim.client.post("/api/show", json={"model": "ghost"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'ghost' not found"}


def test_copy_and_delete(sim: Sim) -> None:
    r = sim.client.post("/api/copy", json={"source": "llama3.2", "destination": "backup"})
    assert r.status_code == 200
    names = [m["name"] for m in sim.client.get("/api/tags").json()["models"]]
    assert "backup:latest" in names
    gen = sim.client.post(
        "/api/generate", json={"model": "backup", "prompt": "hi", "stream": False}
    )
    assert gen.status_code == 200
    r = sim.client.request("DELETE", "/api/delete", json={"model": "backup"})
    assert r.status_code == 200
    names = [m["name"] for m in sim.client.get("/api/tags").json()["models"]]
    assert "backup:latest" not in names
    r = sim.client.request("DELETE", "/api/delete", json={"model": "backup"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'backup' not found"}
    r = sim.client.post("/api/copy", json={"source": "ghost", "destination": "x"})
    assert r.status_code == 404
    assert r.json() == {"error": "model 'ghost' not found"}


def test_pull_stream_sequence_adds_model(sim: Sim) -> None:
    lines = []
    with sim.client.stream("POST", "/api/pull", json={"model": "mistral:7b"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layer_lines = lines[1:-3]
    assert len(layer_lines) % 5 == 0 and layer_lines
    for i in range(0, len(layer_lines), 5):
        group = layer_lines[i : i + 5]
        digest = group[0]["digest"]
        assert digest.startswith("sha256:") and len(digest) == 71
        assert group[0]["status"] == f"pulling {digest[7:19]}"
        assert "completed" not in group[0]
        completed = [g["completed"] for g in group[1:]]
        assert completed == sorted(completed) and completed[-1] == group[0]["total"]
    tags = [m["name"] for m in sim.client.get("/api/tags").json()["models"]]
    assert "mistral:7b" in tags
    chat = sim.client.post(
        "/api/chat",
        json={
            "model": "mistral:7b",
            "messages": [{"role": "user", "content": "x"}],
            "stream": False,
        },
    )
    assert chat.status_code == 200


def test_pull_non_stream_and_missing(sim: Sim) -> None:
    r = sim.client.post("/api/pull", json={"model": "phi3", "stream": False})
    assert r.status_code == 200
    assert r.json() == {"status": "success"}
    r = sim.client.post("/api/pull", json={"model": "doesnotexist", "stream": False})
    assert r.status_code == 500
    assert r.json() == {"error": "pull model manifest: file does not exist"}
    with sim.client.stream("POST", "/api/pull", json={"model": "x-doesnotexist"}) as s:
        lines = [json.loads(line) for line in s.iter_lines() if line]
    assert s.status_code == 200
    assert lines == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    tags = [m["name"] for m in sim.client.get("/api/tags").json()["models"]]
    assert "x-doesnotexist:latest" not in tags


def test_ps_loaded_after_use_and_keep_alive_zero_unloads(sim: Sim) -> None:
    assert sim.client.get("/api/ps").json() == {"models": []}
    sim.client.post("/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
    models = sim.client.get("/api/ps").json()["models"]
    assert [m["name"] for m in models] == ["llama3.2:latest"]
    m = models[0]
    assert m["size_vram"] == m["size"] > 0
    assert m["digest"] == hashlib.sha256(b"llama3.2:latest").hexdigest()
    expires = datetime.fromisoformat(m["expires_at"])
    remaining = (expires - datetime.now().astimezone()).total_seconds()
    assert 240 < remaining <= 300
    r = sim.client.post(
        "/api/generate", json={"model": "llama3.2", "prompt": "", "keep_alive": 0}
    ).json()
    assert r["done"] is True and r["done_reason"] == "unload"
    assert sim.client.get("/api/ps").json() == {"models": []}


def test_keep_alive_duration_and_zero_after_generation(sim: Sim) -> None:
    sim.client.post(
        "/api/chat",
        json={"model": "llama3.2", "messages": [], "keep_alive": "1h"},
    )
    exp = datetime.fromisoformat(sim.client.get("/api/ps").json()["models"][0]["expires_at"])
    assert (exp - datetime.now().astimezone()).total_seconds() > 3500
    sim.client.post(
        "/api/generate",
        json={"model": "llama3.2", "prompt": "bye", "stream": False, "keep_alive": 0},
    )
    assert sim.client.get("/api/ps").json() == {"models": []}
    r = sim.client.post(
        "/api/generate", json={"model": "llama3.2", "prompt": "x", "keep_alive": "soon"}
    )
    assert r.status_code == 400
    assert "invalid duration" in r.json()["error"]


def test_admin_config_roundtrip_and_validation(sim: Sim) -> None:
    cfg = sim.client.get("/_sim/config").json()
    assert cfg == {
        "token_delay_ms": 0.0,
        "first_token_delay_ms": 0.0,
        "load_delay_ms": 0.0,
        "pull_delay_ms": 0.0,
        "num_parallel": 4,
        "max_queue": 512,
        "default_num_predict": 24,
        "fail_mode": "none",
        "fail_after_tokens": 3,
        "fail_count": -1,
    }
    new = sim.config(token_delay_ms=5, num_parallel=2)
    assert new["token_delay_ms"] == 5.0 and new["num_parallel"] == 2
    assert new["max_queue"] == 512
    for bad in ({"num_parallel": 0}, {"fail_mode": "explode"}, {"nope": 1}):
        r = sim.client.post("/_sim/config", json=bad)
        assert r.status_code == 400
        assert r.json()["error"].startswith("invalid config")
    assert sim.client.post("/_sim/reset").json()["config"]["num_parallel"] == 4


def test_stats_counts_requests_per_path(sim: Sim) -> None:
    sim.client.get("/api/tags")
    sim.client.get("/api/tags")
    sim.client.post("/api/generate", json={"model": "llama3.2", "prompt": "a", "stream": False})
    stats = sim.stats()
    assert stats["requests"] == {"/api/tags": 2, "/api/generate": 1}
    assert stats["completed"] == 1
    assert stats["active"] == 0 and stats["queued"] == 0 and stats["cancelled"] == 0
    assert stats["max_active_seen"] == 1
    sim.client.post("/_sim/reset")
    assert sim.stats()["requests"] == {}
