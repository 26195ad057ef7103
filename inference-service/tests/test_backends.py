"""Several backends: routing by model, failover, circuit breaker open → half-open → closed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.processes import Spawn
from tests.fixtures.redis import RedisServer

from .conftest import (
    Service,
    SimHandle,
    assert_problem,
    ident,
    sse_events,
    start_inference,
    start_sim,
)

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


def test_failures_mid_stream_leave_the_breaker_closed(stack: Stack, client: httpx.Client) -> None:
    """A generation that breaks off after its first tokens proved the backend reachable, and
    the cause may be the request's own: its client gets the terminal error event, and the
    breaker, which guards against backends that cannot be reached, is not moved by it."""
    stack.a.config(fail_mode="error_after_tokens", fail_after_tokens=2)
    body = {**CHAT, "stream": True}
    for _ in range(3):  # more than the threshold (2)
        resp = client.post("/inference/chat", json=body)
        assert resp.status_code == 200, resp.text
        assert [name for name, _ in sse_events(resp.text)][-1] == "error"
    assert stack.backends()[stack.a.url]["breaker"] == "closed"
    assert stack.a.requests("/api/chat") == 3
    stack.a.config(fail_mode="none")


def test_all_backends_down_is_503(stack: Stack, client: httpx.Client) -> None:
    stack.a.config(fail_mode="error_500")
    stack.b.config(fail_mode="error_500")
    resp = client.post("/inference/chat", json=CHAT)
    assert_problem(resp, 503)
    assert int(resp.headers["retry-after"]) >= 1
    stack.a.config(fail_mode="none")
    stack.b.config(fail_mode="none")
    time.sleep(COOLDOWN_S + 0.1)


def test_model_whose_only_backend_is_open_is_503_not_404(
    stack: Stack, client: httpx.Client
) -> None:
    httpx.post(
        stack.b.url + "/api/pull", json={"model": "only-b:2b", "stream": False}
    ).raise_for_status()
    time.sleep(0.35)
    body = {**CHAT, "model": "only-b:2b"}
    stack.b.config(fail_mode="error_500")
    for _ in range(2):  # threshold 2: b's breaker opens
        assert_problem(client.post("/inference/chat", json=body), 503)
    assert stack.backends()[stack.b.url]["breaker"] == "open"
    resp = client.post("/inference/chat", json=body)
    problem = assert_problem(resp, 503)  # the model exists; it is only unavailable
    assert "only-b:2b" in problem["detail"]
    assert 1 <= int(resp.headers["retry-after"]) <= COOLDOWN_S + 1
    assert_problem(client.post("/inference/chat", json={**CHAT, "model": "nope:1b"}), 404)
    stack.b.config(fail_mode="none")
    time.sleep(COOLDOWN_S + 0.1)
    assert client.post("/inference/chat", json=body).status_code == 200  # probe heals it


def _pull(client: httpx.Client, model: str, **params: str) -> list[tuple[str, object]]:
    admin = ident("inference", "admin")
    resp = client.post(
        "/inference/models/pull", json={"model": model}, params=params, headers=admin
    )
    assert resp.status_code == 200, resp.text
    return sse_events(resp.text)


def test_pull_goes_where_asked_else_to_the_emptiest_backend(
    stack: Stack, client: httpx.Client
) -> None:
    events = _pull(client, "spread-a:1b", backend=stack.b.url)
    assert events[-1] == ("done", {"status": "success"})
    assert {e[1]["backend"] for e in events if e[0] == "progress"} == {stack.b.url}  # type: ignore[index]
    time.sleep(0.35)
    # b now holds more models than a: the default sends the next pull to a …
    events = _pull(client, "spread-b:1b")
    assert {e[1]["backend"] for e in events if e[0] == "progress"} == {stack.a.url}  # type: ignore[index]
    assert stack.a.requests("/api/pull") == 1 and stack.b.requests("/api/pull") == 1
    # … and a model a backend already has goes to one that lacks it
    time.sleep(0.35)
    _pull(client, "spread-a:1b")
    assert stack.a.requests("/api/pull") == 2
    resp = client.post(
        "/inference/models/pull",
        json={"model": "x:1b"},
        params={"backend": "http://127.0.0.1:1"},
        headers=ident("inference", "admin"),
    )
    assert stack.b.url in assert_problem(resp, 404)["detail"]
