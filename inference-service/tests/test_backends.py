"""Several backends: routing by model, failover, circuit breaker open → half-open → closed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import Service, SimHandle, assert_problem, ident, start_inference, start_sim

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hello there"}]}
COOLDOWN_S = 1.0


@dataclass
class Stack:
    a: SimHandle
    b: SimHandle
    service: Service

    def backends(self) -> dict[str, dict[str, object]]:
        resp = httpx.get(self.service.url + "/inference/backends", headers=ident())
        return {b["url"]: b for b in resp.json()["backends"]}


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, redis_server: RedisServer) -> Stack:
    a, b = start_sim(module_spawn, "sim-a"), start_sim(module_spawn, "sim-b")
    service = start_inference(
        module_spawn,
        [a.url, b.url],
        redis_server.url(0),
        INFERENCE_BREAKER_THRESHOLD="2",
        INFERENCE_BREAKER_COOLDOWN_S=str(COOLDOWN_S),
        INFERENCE_OLLAMA_RETRIES="1",
    )
    return Stack(a, b, service)


@pytest.fixture
def client(stack: Stack) -> httpx.Client:
    stack.a.reset()
    stack.b.reset()
    client = httpx.Client(base_url=stack.service.url, headers=ident(), timeout=10)
    if any(b["breaker"] != "closed" for b in stack.backends().values()):
        time.sleep(COOLDOWN_S + 0.1)  # let an earlier test's open breaker heal
        for _ in range(2):
            client.post("/inference/chat", json=CHAT).raise_for_status()
    time.sleep(0.35)  # model lists refresh every 0.3 s in these tests
    assert all(b["breaker"] == "closed" for b in stack.backends().values())
    stack.a.reset()
    stack.b.reset()
    return client


def test_model_on_one_backend_is_routed_there(stack: Stack, client: httpx.Client) -> None:
    httpx.post(
        stack.b.url + "/api/pull", json={"model": "only-b:1b", "stream": False}
    ).raise_for_status()
    time.sleep(0.35)
    for _ in range(3):
        resp = client.post("/inference/chat", json={**CHAT, "model": "only-b:1b"})
        assert resp.status_code == 200, resp.text
    assert stack.b.requests("/api/chat") == 3
    assert stack.a.requests("/api/chat") == 0
    names = [m["name"] for m in client.get("/inference/models").json()["models"]]
    assert "only-b:1b" in names


def test_shared_model_spreads_and_fails_over(stack: Stack, client: httpx.Client) -> None:
    stack.a.config(fail_mode="refuse")
    for _ in range(4):
        resp = client.post("/inference/chat", json=CHAT)
        assert resp.status_code == 200, resp.text
    assert stack.b.requests("/api/chat") == 4


def test_breaker_opens_and_recovers(stack: Stack, client: httpx.Client) -> None:
    stack.a.config(fail_mode="error_500")
    for _ in range(3):
        assert client.post("/inference/chat", json=CHAT).status_code == 200  # failover to b
    assert stack.backends()[stack.a.url]["breaker"] == "open"
    seen = stack.a.requests("/api/chat")
    for _ in range(3):
        assert client.post("/inference/chat", json={**CHAT, "stream": True}).status_code == 200
    assert stack.a.requests("/api/chat") == seen  # no traffic while open
    stack.a.config(fail_mode="none")
    time.sleep(COOLDOWN_S + 0.1)
    for _ in range(4):
        assert client.post("/inference/chat", json=CHAT).status_code == 200
    assert stack.a.requests("/api/chat") > seen  # the half-open probe went through
    assert stack.backends()[stack.a.url]["breaker"] == "closed"


def test_all_backends_down_is_503(stack: Stack, client: httpx.Client) -> None:
    stack.a.config(fail_mode="error_500")
    stack.b.config(fail_mode="error_500")
    resp = client.post("/inference/chat", json=CHAT)
    assert_problem(resp, 503)
    assert int(resp.headers["retry-after"]) >= 1
    stack.a.config(fail_mode="none")
    stack.b.config(fail_mode="none")
    time.sleep(COOLDOWN_S + 0.1)
