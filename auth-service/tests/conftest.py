"""Fixtures of the auth-service tests: one real auth process shared by the test modules
(tests isolate themselves with unique usernames and client IPs), a Redis database of its
own, a gateway-like client, a subscriber to the revocation channel, and ``start_auth`` for
tests that need a process of their own (restarts, other settings).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess
from tests.fixtures.processes import REPO_ROOT, Spawn, module_argv
from tests.fixtures.redis import RedisServer, _databases

sys.path.insert(0, str(Path(__file__).parent))  # the harness module beside this file

from auth_harness import (
    AuthServer,
    GatewayClient,
    RevocationListener,
    StartAuth,
    auth_env,
)


@pytest.fixture(scope="session")
def auth_redis_url(redis_server: RedisServer) -> str:
    """A Redis database for the shared auth process (flushed first)."""
    url = redis_server.url(next(_databases))
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def _start(spawn: Spawn, name: str, env: dict[str, str], data_dir: Path) -> AuthServer:
    url = f"http://127.0.0.1:{env['AUTH_PORT']}"
    proc = spawn(name, module_argv("auth_service"), env=env, ready_url=url + "/ready")
    return AuthServer(
        url=url,
        redis_url=env["AUTH_REDIS_URL"],
        data_dir=data_dir,
        env=env,
        log_path=proc.log_path,
        process=proc,
    )


@pytest.fixture(scope="session")
def auth_server(
    auth_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthServer]:
    """The shared auth process (argon2 cost low, but high enough to time: ~10 ms a hash)."""
    tmp = tmp_path_factory.mktemp("auth-shared")
    processes: list[ManagedProcess] = []

    def spawn(name: str, argv: list[str], *, env: dict[str, str], ready_url: str) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=tmp / f"{name}.log", env=env, cwd=REPO_ROOT)
        processes.append(proc.start())
        proc.wait_http(ready_url, 30)
        return proc

    env = auth_env(free_port(), auth_redis_url, tmp / "data", AUTH_ARGON2_MEMORY_COST="16384")
    try:
        yield _start(spawn, "auth", env, tmp / "data")
    finally:
        for proc in processes:
            proc.stop()


@pytest.fixture(scope="session")
def gateway(auth_server: AuthServer) -> Iterator[GatewayClient]:
    client = GatewayClient(auth_server)
    yield client
    client.close()


@pytest.fixture
def revocations(auth_redis_url: str) -> Iterator[RevocationListener]:
    listener = RevocationListener(auth_redis_url)
    yield listener
    listener.close()


@pytest.fixture
def start_auth(spawn: Spawn, redis_url: str, tmp_path: Path) -> StartAuth:
    """Start an auth process for one test: ``start_auth(data_dir=…, **env_overrides)``."""
    count = 0

    def start(data_dir: Path | None = None, **overrides: str) -> AuthServer:
        nonlocal count
        count += 1
        directory = data_dir or tmp_path / "auth-data"
        env = auth_env(free_port(), redis_url, directory, **overrides)
        return _start(spawn, f"auth-{count}", env, directory)

    return start
