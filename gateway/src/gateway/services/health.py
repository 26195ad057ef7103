"""Aggregated health: ask every upstream's ``/health`` concurrently, bounded by a timeout."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from gateway.models.health import UpstreamHealth
from gateway.services.upstreams import UpstreamPool


@dataclass(frozen=True, slots=True)
class RelayedResponse:
    status: int
    content_type: str
    body: bytes


async def check_upstream(pool: UpstreamPool, service: str, timeout_s: float) -> UpstreamHealth:
    """One service: its single instance, or all of its instances ("ok" if any is)."""
    breakers = pool.balancers[service].state()
    urls = list(breakers)
    checks = await asyncio.gather(*(check_instance(pool, url, timeout_s) for url in urls))
    for url, check in zip(urls, checks, strict=True):
        check.breaker = breakers[url]
    if len(checks) == 1:
        return checks[0]
    up = [c for c in checks if c.status == "ok"]
    return UpstreamHealth(
        status="ok" if up else "down",
        url=",".join(urls),
        latency_ms=min(c.latency_ms for c in up or checks),
        error=None if up else "every instance is down",
        instances=dict(zip(urls, checks, strict=True)),
    )


async def check_instance(pool: UpstreamPool, url: str, timeout_s: float) -> UpstreamHealth:
    start = time.perf_counter()
    try:
        async with pool.session.get(
            url + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            await resp.read()
            ok = resp.status == 200
            error = None if ok else f"/health answered {resp.status}"
    except TimeoutError:
        ok, error = False, f"no answer within {timeout_s:g}s"
    except aiohttp.ClientError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"[:200]
    return UpstreamHealth(
        status="ok" if ok else "down",
        url=url,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
        error=error,
    )


async def check_all(pool: UpstreamPool, timeout_s: float) -> dict[str, UpstreamHealth]:
    services = list(pool.base_urls)
    results = await asyncio.gather(*(check_upstream(pool, s, timeout_s) for s in services))
    return dict(zip(services, results, strict=True))


async def relay(pool: UpstreamPool, service: str, path: str, timeout_s: float) -> RelayedResponse:
    """GET one of a service's operational endpoints (``/health``, ``/ready``, ``/metrics``)."""
    async with pool.session.get(
        pool.base_url(service) + path, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as resp:
        return RelayedResponse(
            status=resp.status,
            content_type=resp.headers.get("content-type", "application/octet-stream"),
            body=await resp.read(),
        )
