"""Fixtures for the inference service's tests: real simulators, a real service, real Redis.

``start_sim(spawn)`` launches ``python -m ollama_sim`` on a free port and returns a
:class:`SimHandle`; ``start_inference(spawn, urls, redis_url, **env)`` launches the service.
``ident(scopes)`` builds the gateway-signed identity headers for a fresh user.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from switchboard_common.identity import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    Principal,
    sign_identity,
)
from switchboard_common.redis_client import create_redis
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.support.responses import assert_problem as assert_problem
from tests.support.responses import sse_events as sse_events

SECRET = "inference-test-secret"


@dataclass
class SimHandle:
    url: str

    def config(self, **knobs: Any) -> dict[str, Any]:
        resp = httpx.post(self.url + "/_sim/config", json=knobs, timeout=5)
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/_sim/stats", timeout=5).json())

    def requests(self, path: str) -> int:
        return int(self.stats()["requests"].get(path, 0))

    def wait_stats(
        self, predicate: Callable[[dict[str, Any]], bool], within_s: float = 3.0
    ) -> None:
        deadline = time.monotonic() + within_s
        while not predicate(stats := self.stats()):
            if time.monotonic() > deadline:
                pytest.fail(f"simulator stats condition not met: {stats}")
            time.sleep(0.02)


@dataclass
class Service:
    url: str

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")


@dataclass
class Stack:
    """A simulator and an inference service process using it."""

    sim: SimHandle
    service: Service


def start_stack(spawn: Spawn, redis_url: str, sim_name: str, **env: str) -> Stack:
    sim = start_sim(spawn, sim_name)
    return Stack(sim, start_inference(spawn, [sim.url], redis_url, **env))


def start_sim(spawn: Spawn, name: str, *flags: str) -> SimHandle:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spawn(name, module_argv("ollama_sim", "--port", str(port), *flags), ready_url=url + "/")
    return SimHandle(url)


def start_inference(spawn: Spawn, urls: list[str], redis_url: str, **env: str) -> Service:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spawn(
        "inference",
        module_argv("inference_service"),
        env={
            "INFERENCE_PORT": str(port),
            "INFERENCE_OLLAMA_URLS": ",".join(urls),
            "INFERENCE_REDIS_URL": redis_url,
            "INFERENCE_ENVIRONMENT": "test",
            "INFERENCE_LOG_LEVEL": "warning",
            "INFERENCE_OLLAMA_BACKOFF_BASE_S": "0.01",
            "INFERENCE_OLLAMA_BACKOFF_JITTER_S": "0.01",
            "INFERENCE_MODEL_REFRESH_INTERVAL_S": "0.3",
            "SWITCHBOARD_INTERNAL_SECRET": SECRET,
            **env,
        },
        ready_url=url + "/health",
    )
    return Service(url)


def ident(*scopes: str, sub: str | None = None) -> dict[str, str]:
    """Signed identity headers for a (fresh, unless ``sub``) user."""
    sub = sub or f"user-{uuid.uuid4().hex[:10]}"
    value, signature = sign_identity(
        Principal(sub=sub, username=sub, scope=list(scopes or ("inference",))), SECRET
    )
    return {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature, "X-Test-Sub": sub}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the test's own Redis database."""
    client = create_redis(redis_url)
    yield client
    await client.aclose()
