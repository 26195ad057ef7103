"""Parallel slots, bounded queue (503) and cancel-on-disconnect accounting."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from simtools import Sim

SLOW = {"model": "llama3.2", "prompt": "slow", "stream": False, "options": {"num_predict": 4}}


async def _post_many(base: str, n: int, body: dict[str, Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:

        async def one(i: int) -> httpx.Response:
            await asyncio.sleep(0.02 * i)  # deterministic arrival order
            return await client.post("/api/generate", json=body)

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_queue_full_returns_503(sim: Sim) -> None:
    sim.config(num_parallel=1, max_queue=1, token_delay_ms=100)
    responses = asyncio.run(_post_many(sim.base_url, 3, SLOW))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 503]
    assert responses[2].json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"
    }
    stats = sim.stats()
    assert stats["max_active_seen"] == 1
    assert stats["rejected"] == 1 and stats["completed"] == 2
    assert stats["active"] == 0 and stats["queued"] == 0


def test_parallel_slots_run_concurrently(sim: Sim) -> None:
    sim.config(num_parallel=3, token_delay_ms=100)
    start = time.monotonic()
    responses = asyncio.run(_post_many(sim.base_url, 3, SLOW))
    elapsed = time.monotonic() - start
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert elapsed < 0.3 * 3  # 3 x 300 ms would be serial
    assert sim.stats()["max_active_seen"] == 3


def test_queued_request_waits_for_slot(sim: Sim) -> None:
    sim.config(num_parallel=1, max_queue=4, token_delay_ms=100)
    start = time.monotonic()
    responses = asyncio.run(_post_many(sim.base_url, 2, SLOW))
    assert [r.status_code for r in responses] == [200, 200]
    assert time.monotonic() - start >= 0.55  # second waited ~300 ms for the first
    assert responses[1].json()["total_duration"] >= 0.5e9  # queue wait is part of total


def test_cancel_on_disconnect_is_counted(sim: Sim) -> None:
    sim.config(token_delay_ms=100)
    body = {"model": "llama3.2", "prompt": "long answer", "options": {"num_predict": 50}}
    got = []
    with (
        httpx.Client(base_url=sim.base_url, timeout=5) as client,
        client.stream("POST", "/api/generate", json=body) as r,
    ):
        for line in r.iter_lines():
            if line:
                got.append(json.loads(line))
            if len(got) == 2:
                break  # leaving the block closes the connection mid-stream
    assert all(g["done"] is False for g in got)
    start = time.monotonic()
    stats = sim.wait_stats(lambda s: s["cancelled"] == 1, timeout=2.0)
    assert time.monotonic() - start < 2.0
    assert stats["active"] == 0  # the slot was released
    assert stats["completed"] == 0
    # the server keeps serving normally afterwards
    r2 = sim.client.post(
        "/api/generate", json={**body, "stream": False, "options": {"num_predict": 2}}
    )
    assert r2.status_code == 200


def test_cancel_non_streaming_and_queued(sim: Sim) -> None:
    sim.config(num_parallel=1, token_delay_ms=100)

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
            body = {**SLOW, "options": {"num_predict": 20}}
            first = asyncio.create_task(client.post("/api/generate", json=body))
            await asyncio.sleep(0.2)
            queued = asyncio.create_task(client.post("/api/generate", json=body))
            await asyncio.sleep(0.2)
            queued.cancel()  # leaves while still waiting for the slot
            await asyncio.sleep(0.1)
            first.cancel()  # leaves while its non-streamed answer is being produced
            await asyncio.gather(first, queued, return_exceptions=True)

    asyncio.run(scenario())
    stats = sim.wait_stats(lambda s: s["cancelled"] == 1 and s["queue_abandoned"] == 1)
    assert stats["active"] == 0 and stats["queued"] == 0 and stats["completed"] == 0
