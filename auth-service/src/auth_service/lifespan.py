"""Start-up and shutdown of the auth service: what exists while it serves.

In order: database engine → Alembic migrations to head → signing keys (created on first
start, refused when undecryptable) → first admin from env → Redis → the expired-API-key
sweeper. Everything is reachable through :class:`AuthComponents` on ``app.state.auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from auth_service.config import Settings
from auth_service.core.key_encryption import KeyEncryptor
from auth_service.core.security import Argon2Params, PasswordHasher
from auth_service.db.engine import create_engine, create_session_factory
from auth_service.db.migrate import apply_migrations
from auth_service.services.accounts import ensure_first_admin
from auth_service.services.api_keys import sweep_expired_keys
from auth_service.services.keyring import KeyRing
from auth_service.services.lockout import LoginThrottle
from auth_service.services.revocations import RevocationPublisher
from switchboard_common import managed_redis

logger = logging.getLogger("auth.lifespan")


@dataclass(frozen=True)
class AuthComponents:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    keyring: KeyRing
    redis: Redis
    publisher: RevocationPublisher
    throttle: LoginThrottle


class DatabasePing:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self) -> object:
        async with self.engine.connect() as connection:
            return await connection.execute(text("SELECT 1"))


def password_hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(
        Argon2Params(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        ),
        concurrency=settings.hash_concurrency,
        queue_timeout_s=settings.hash_queue_timeout_s,
    )


def key_ring(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> KeyRing:
    return KeyRing(
        sessions,
        KeyEncryptor(settings.key_encryption_secret.get_secret_value()),
        retire_overlap_s=settings.revocation_ttl_s,
        cache_s=settings.key_cache_s,
    )


async def _sweep_forever(components: AuthComponents) -> None:
    while True:
        await asyncio.sleep(components.settings.api_key_sweep_interval_s)
        try:
            await sweep_expired_keys(components.sessions, components.settings, components.publisher)
        except Exception as exc:  # keep sweeping; the next round retries
            logger.warning("api key sweep failed", extra={"error": type(exc).__name__})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings.resolved_database_url)
    try:
        await apply_migrations(engine)
        sessions = create_session_factory(engine)
        hasher = password_hasher(settings)
        keyring = key_ring(settings, sessions)
        await keyring.ensure_keys()
        await keyring.verify_all_decryptable()
        await ensure_first_admin(sessions, hasher, settings)
        app.state.readiness.add("database", DatabasePing(engine))
        async with managed_redis(app, settings) as redis:
            components = AuthComponents(
                settings=settings,
                sessions=sessions,
                hasher=hasher,
                keyring=keyring,
                redis=redis,
                publisher=RevocationPublisher(redis, settings.revocation_ttl_s),
                throttle=LoginThrottle(
                    redis,
                    max_failures=settings.lockout_max_failures,
                    ip_max_failures=settings.lockout_ip_max_failures,
                    window_s=settings.lockout_window_s,
                ),
            )
            app.state.auth = components
            sweeper = asyncio.create_task(_sweep_forever(components), name="api-key-sweeper")
            try:
                yield
            finally:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
    finally:
        await engine.dispose()
