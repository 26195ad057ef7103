"""The Redis factory's blocking pool waits for a connection instead of failing (real Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from switchboard_common import create_redis


async def test_burst_beyond_pool_size_waits_instead_of_failing(redis_url: str) -> None:
    client = create_redis(redis_url, max_connections=2, timeout_s=5)
    try:
        # 10 commands that each hold a connection for 0.2 s, through a pool of 2.
        start = time.monotonic()
        results = await asyncio.gather(
            *(client.blpop([f"nothing:{i}"], timeout=0.2) for i in range(10))
        )
        elapsed = time.monotonic() - start
    finally:
        await client.aclose()
    assert results == [None] * 10
    assert elapsed >= 0.8  # 10 x 0.2 s over 2 connections: they queued for the pool


async def test_unreachable_redis_fails_fast() -> None:
    client = create_redis("redis://127.0.0.1:1/0", timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()
    assert time.monotonic() - start < 3
