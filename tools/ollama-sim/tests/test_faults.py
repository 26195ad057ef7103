"""Failure injection: each fail_mode and the fail_count budget."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from simtools import Sim, stream_ndjson

GEN = {"model": "llama3.2", "prompt": "Why is the sky blue?"}


def test_refuse_drops_connection_without_response(sim: Sim) -> None:
    sim.config(fail_mode="refuse", fail_count=1)
    with (
        httpx.Client(base_url=sim.base_url, timeout=5) as fresh,
        pytest.raises(httpx.TransportError),
    ):
        fresh.post("/api/generate", json=GEN)
    r = sim.client.post("/api/generate", json={**GEN, "stream": False})
    assert r.status_code == 200
    stats = sim.stats()
    assert stats["failed"] == 1 and stats["completed"] == 1


def test_error_500_before_first_byte(sim: Sim) -> None:
    sim.config(fail_mode="error_500")
    for body in (GEN, {**GEN, "stream": False}):
        r = sim.client.post("/api/generate", json=body)
        assert r.status_code == 500
        assert r.json() == {"error": "simulated internal error"}
    r = sim.client.post("/api/embed", json={"model": "nomic-embed-text", "input": "x"})
    assert r.status_code == 500
    assert sim.client.get("/api/tags").status_code == 200  # non-inference routes unaffected
    assert sim.client.get("/_sim/config").json()["fail_count"] == -1


def test_fail_count_budget(sim: Sim) -> None:
    sim.config(fail_mode="error_500", fail_count=2)
    codes = [
        sim.client.post("/api/generate", json={**GEN, "stream": False}).status_code
        for _ in range(4)
    ]
    assert codes == [500, 500, 200, 200]
    cfg = sim.client.get("/_sim/config").json()
    assert cfg["fail_count"] == 0 and cfg["fail_mode"] == "error_500"
    assert sim.stats()["failed"] == 2


def test_validation_errors_do_not_consume_faults(sim: Sim) -> None:
    sim.config(fail_mode="error_500", fail_count=1)
    assert (
        sim.client.post("/api/generate", json={"model": "ghost", "prompt": "x"}).status_code == 404
    )
    assert sim.client.post("/api/generate", json=GEN).status_code == 500


def test_error_after_tokens_streaming(sim: Sim) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=2)
    r, lines = stream_ndjson(
        sim.client,
        "/api/chat",
        {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    objs = [o for _, o in lines]
    assert len(objs) == 3
    assert all(o["done"] is False and o["message"]["content"] for o in objs[:2])
    assert objs[-1] == {"error": "simulated failure after 2 tokens"}
    stats = sim.stats()
    assert stats["failed"] == 1 and stats["completed"] == 0 and stats["cancelled"] == 0


def test_error_after_tokens_non_streaming(sim: Sim) -> None:
    sim.config(fail_mode="error_after_tokens", fail_after_tokens=3, fail_count=1)
    r = sim.client.post("/api/generate", json={**GEN, "stream": False})
    assert r.status_code == 500
    assert r.json() == {"error": "simulated failure after 3 tokens"}
    assert sim.client.post("/api/generate", json={**GEN, "stream": False}).status_code == 200


def test_hang_never_answers_and_blocks_nothing(sim: Sim) -> None:
    sim.config(fail_mode="hang", fail_count=1)
    outcome: list[BaseException] = []

    def hang() -> None:
        with httpx.Client(base_url=sim.base_url, timeout=1.0) as c:
            try:
                c.post("/api/generate", json=GEN)
            except BaseException as exc:  # record whatever happened
                outcome.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    sim.wait_stats(lambda s: s["hanging"] == 1)
    start = time.monotonic()
    assert sim.client.get("/api/tags").status_code == 200
    assert sim.client.post("/api/generate", json={**GEN, "stream": False}).status_code == 200
    assert time.monotonic() - start < 0.5
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.ReadTimeout)
    stats = sim.wait_stats(lambda s: s["hanging"] == 0)
    assert stats["active"] == 0 and stats["failed"] == 1
