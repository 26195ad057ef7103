"""Redis client factory.

Uses a *blocking* connection pool: under a burst a command waits up to ``timeout_s`` for a
free connection instead of failing with "Too many connections" (redis-py's default pool).
Connect and command timeouts are explicit, so a frozen Redis costs seconds at most, never
a hang.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline

from switchboard_common.settings import ServiceSettings


def create_redis(
    url: str,
    *,
    max_connections: int = 64,
    timeout_s: float = 2.0,
    health_check_interval_s: int = 30,
    decode_responses: bool = False,
    blocking_reads: bool = False,
    traced: bool = True,
) -> Redis:
    """An async Redis client over a blocking pool. Close it with ``await client.aclose()``.

    ``blocking_reads=True`` drops the command timeout, for connections that wait on purpose
    (pub/sub listeners poll with their own timeout instead). ``traced=False``: its commands
    make no OpenTelemetry spans (``UntracedRedis``).
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        socket_timeout=None if blocking_reads else timeout_s,
        health_check_interval=health_check_interval_s,
        decode_responses=decode_responses,
    )
    return Redis(connection_pool=pool) if traced else UntracedRedis(connection_pool=pool)


def _unwrapped(method: Any) -> Any:
    """The original of a method the redis instrumentation wrapped (wrapt keeps it in
    ``__wrapped__``), or the method itself when nothing is instrumented."""
    return getattr(method, "__wrapped__", method)


class UntracedRedis(Redis):
    """A client whose commands bypass ``RedisInstrumentor`` (which patches the classes,
    process-wide, with no per-client opt-out).

    For hot-path clients that run outside any span, like the gateway's rate limiter and
    response cache: there every command would become a root trace of its own (noise, not
    a child of the request) and cost an SDK span and its export, ~130 µs of CPU.
    """

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _unwrapped(Redis.execute_command)(self, *args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return UntracedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class UntracedPipeline(Pipeline):
    """The pipeline of an ``UntracedRedis``."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        result: list[Any] = await _unwrapped(Pipeline.execute)(self, raise_on_error)
        return result

    async def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        return await _unwrapped(Pipeline.immediate_execute_command)(self, *args, **options)


def redis_ping(client: Redis) -> RedisPing:
    return RedisPing(client)


class RedisPing:
    """A readiness check: ``PING`` must answer."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def __call__(self) -> object:
        return await self.client.ping()


@asynccontextmanager
async def managed_redis(app: FastAPI, settings: ServiceSettings) -> AsyncIterator[Redis]:
    """Lifespan helper: create the client from settings, register readiness, close at exit."""
    client = create_redis(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout_s=settings.redis_timeout_s,
    )
    app.state.redis = client
    app.state.readiness.add("redis", redis_ping(client))
    try:
        yield client
    finally:
        await client.aclose()
