"""Rate limits: exact across replicas (real Redis), failing open, recovering by themselves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.models.limits import Limit, parse_limits
from gateway.services.rate_limit import FAIL_OPEN, RateLimiter
from switchboard_common import create_redis
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.fixtures.redis import RedisServer


def test_parse_limits() -> None:
    assert Limit.parse("60/minute") == Limit(60, 60)
    assert Limit.parse("10/s") == Limit(10, 1)
    assert Limit.parse("100/30s") == Limit(100, 30)
    assert parse_limits("free=60/minute, pro=600/min,admin=0") == {
        "free": Limit(60, 60),
        "pro": Limit(600, 60),
        "admin": None,  # unlimited, and not "unlisted" (which would mean the default)
    }
    with pytest.raises(ValueError, match="not a rate limit"):
        Limit.parse("sixty per minute")


def replicas(url: str, n: int = 2) -> list[tuple[Redis, RateLimiter]]:
    out = []
    for _ in range(n):
        client = create_redis(url, timeout_s=1)
        out.append((client, RateLimiter(client, timeout_s=0.5, lease_max=16)))
    return out


async def test_two_replicas_admit_exactly_the_limit_in_one_burst(redis_url: str) -> None:
    pairs = replicas(redis_url)
    limit = Limit(100, 60)
    try:
        results = await asyncio.gather(
            *(pairs[i % 2][1].hit("u:1:memory", limit) for i in range(300))
        )
    finally:
        for client, _ in pairs:
            await client.aclose()
    allowed = sum(r.allowed for r in results)
    assert allowed == 100
    refused = [r for r in results if not r.allowed]
    assert all(0 < r.reset_s <= 60 for r in refused)
    assert all(dict(r.headers())[b"retry-after"] for r in refused)


async def test_repeated_bursts_never_exceed_the_window(redis_url: str) -> None:
    """Bursts of 15 every 0.3 s against 20 per 1 s: in any 1 s, at most 20 admitted — an
    idle key must not refill early (Traefik admitted 12x its limit in this pattern)."""
    pairs = replicas(redis_url)
    limit = Limit(20, 1)
    admitted: list[float] = []
    try:
        for _burst in range(10):
            outcomes = await asyncio.gather(
                *(pairs[i % 2][1].hit("u:2:memory", limit) for i in range(15))
            )
            now = time.monotonic()
            admitted += [now for o in outcomes if o.allowed]
            await asyncio.sleep(0.3)
    finally:
        for client, _ in pairs:
            await client.aclose()
    assert admitted
    worst = max(sum(1 for t in admitted if s - 1.0 < t <= s) for s in admitted)
    assert worst <= 20 + 1  # +1: the client-side timestamps are taken after each burst
    assert len(admitted) >= 20 * 2  # and it does admit again as the window slides


async def test_a_hot_key_mostly_uses_leases(redis_url: str) -> None:
    client = create_redis(redis_url, timeout_s=1)
    limiter = RateLimiter(client, timeout_s=0.5, lease_max=16, lease_ttl_s=1.0)
    calls = 0
    real = limiter.script

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    limiter.script = counting  # type: ignore[assignment]
    try:
        for _ in range(200):
            assert (await limiter.hit("u:3:memory", Limit(100_000, 60))).allowed
    finally:
        await client.aclose()
    assert calls < 60  # far fewer Redis round trips than requests


async def test_redis_down_fails_open_fast_and_recovers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url(14)
    client = create_redis(url, timeout_s=0.2)
    limiter = RateLimiter(client, timeout_s=0.05, retry_s=0.3, lease_max=1)
    limit = Limit(3, 60)
    try:
        await client.flushdb()
        assert [(await limiter.hit("u:4:memory", limit)).allowed for _ in range(4)] == [
            True, True, True, False,
        ]  # fmt: skip
        redis_server.kill()
        before = FAIL_OPEN._value.get()
        start = time.monotonic()
        outcomes = [await limiter.hit("u:4:memory", limit) for _ in range(20)]
        assert all(o.allowed for o in outcomes)  # served while Redis is gone
        assert time.monotonic() - start < 1.0  # and quickly: no per-request wait
        assert FAIL_OPEN._value.get() - before == 20
        assert outcomes[0].headers() == []  # no RateLimit-* promises while not enforcing
        redis_server.restart(tmp_path)
        await asyncio.sleep(0.4)  # past retry_s: Redis is asked again
        outcomes = [await limiter.hit("u:5:memory", limit) for _ in range(4)]
        assert [o.allowed for o in outcomes] == [True, True, True, False]
    finally:
        await client.aclose()


# --- through real gateway processes ------------------------------------------------------


@pytest.fixture
def two_gateways(spawn: Spawn, redis_server: RedisServer) -> list[str]:
    echo_port = free_port()
    upstream = f"http://127.0.0.1:{echo_port}"
    spawn(
        "echo",
        module_argv("tests.support.echo_upstream"),
        env={"ECHO_PORT": str(echo_port)},
        ready_url=upstream + "/ready",
    )
    gateways = []
    for i in range(2):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        spawn(
            f"gateway{i}",
            module_argv("gateway"),
            env={
                "GATEWAY_PORT": str(port),
                "GATEWAY_MEMORY_URL": upstream,
                "GATEWAY_PUBLIC_PATHS": "/memory/*",
                "GATEWAY_ANONYMOUS_RATE_LIMIT": "50/minute",
                "GATEWAY_REDIS_URL": redis_server.url(13),
            },
            ready_url=url + "/ready",
        )
        gateways.append(url)
    return gateways


def test_two_gateway_processes_share_one_limit(two_gateways: list[str]) -> None:
    statuses = []
    with httpx.Client(timeout=5) as client:
        for i in range(80):
            resp = client.get(two_gateways[i % 2] + "/memory/echo")
            statuses.append(resp.status_code)
            if resp.status_code == 429:
                assert resp.headers["content-type"] == "application/problem+json"
                assert int(resp.headers["retry-after"]) >= 1
                assert resp.headers["ratelimit-remaining"] == "0"
            else:
                assert resp.headers["ratelimit-limit"] == "50"
    assert statuses.count(200) == 50
    assert statuses.count(429) == 30
