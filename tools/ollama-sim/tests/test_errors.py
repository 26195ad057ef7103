"""Every error case: status code and the exact ``{"error": ...}`` body."""

from __future__ import annotations

from typing import Any

import pytest

from simtools import Sim

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/generate", {"model": "ghost", "prompt": "x"}, 404, "model 'ghost' not found"),
        (
            "/api/generate",
            {"model": "llama3.2:1b", "prompt": "x"},
            404,
            "model 'llama3.2:1b' not found",
        ),
        ("/api/chat", {"model": "ghost:7b", "messages": USER}, 404, "model 'ghost:7b' not found"),
        ("/api/embed", {"model": "ghost", "input": "x"}, 404, "model 'ghost' not found"),
        ("/api/show", {"model": "ghost"}, 404, "model 'ghost' not found"),
        ("/api/generate", {"prompt": "x"}, 400, "model is required"),
        ("/api/chat", {"messages": USER}, 400, "model is required"),
        ("/api/generate", {"model": "", "prompt": "x"}, 400, "model is required"),
        (
            "/api/generate",
            {"model": "nomic-embed-text", "prompt": "x"},
            400,
            '"nomic-embed-text" does not support generate',
        ),
        (
            "/api/chat",
            {"model": "nomic-embed-text:latest", "messages": USER},
            400,
            '"nomic-embed-text:latest" does not support chat',
        ),
        ("/api/copy", {"source": "llama3.2"}, 400, "destination is required"),
    ],
)
def test_error_status_and_message(
    sim: Sim, path: str, body: dict[str, Any], status: int, message: str
) -> None:
    r = sim.client.post(path, json=body)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"error": message}


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/api/chat", {"model": "llama3.2", "messages": "hello"}, "messages"),
        (
            "/api/chat",
            {"model": "llama3.2", "messages": [{"role": "wizard", "content": "x"}]},
            "role",
        ),
        ("/api/chat", {"model": "llama3.2", "messages": [{"content": "x"}]}, "role"),
        ("/api/generate", {"model": "llama3.2", "prompt": 42}, "prompt"),
        ("/api/generate", {"model": 3, "prompt": "x"}, "model"),
        ("/api/generate", {"model": "llama3.2", "prompt": "x", "stream": "maybe"}, "stream"),
        ("/api/generate", {"model": "llama3.2", "prompt": "x", "format": "yaml"}, "format"),
        ("/api/generate", {"model": "llama3.2", "prompt": "x", "options": {"seed": "x"}}, "seed"),
        ("/api/embed", {"model": "nomic-embed-text", "input": [1, 2]}, "input"),
    ],
)
def test_wrong_types_are_400(sim: Sim, path: str, body: dict[str, Any], fragment: str) -> None:
    r = sim.client.post(path, json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert fragment in error


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"just a string"'])
def test_invalid_json_bodies(sim: Sim, raw: bytes) -> None:
    r = sim.client.post("/api/generate", content=raw)
    assert r.status_code == 400
    assert set(r.json()) == {"error"}


def test_unknown_route_and_method(sim: Sim) -> None:
    assert sim.client.get("/api/nothing").status_code == 404
    assert sim.client.get("/api/generate").status_code == 405


def test_errors_do_not_count_as_generations(sim: Sim) -> None:
    sim.client.post("/api/generate", json={"model": "ghost", "prompt": "x"})
    stats = sim.stats()
    assert stats["completed"] == 0 and stats["max_active_seen"] == 0
    assert stats["requests"] == {"/api/generate": 1}
