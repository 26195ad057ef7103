"""Login under pressure: argon2 runs a bounded number at a time (503 past the queue wait),
lockout counters hold against parallel guesses, and a disabled account answers exactly
like a wrong password."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
from auth_harness import (
    PASSWORD,
    AuthServer,
    GatewayClient,
    StartAuth,
    is_problem,
    unique_ip,
    unique_name,
)

# argon2 slow enough (~0.1-0.3 s a verification here) that parallel requests overlap
SLOW_ARGON2 = {
    "AUTH_ARGON2_TIME_COST": "2",
    "AUTH_ARGON2_MEMORY_COST": "32768",
    "AUTH_ARGON2_PARALLELISM": "1",
}


# --- the hashing limiter, through a real process ----------------------------------------


async def test_logins_beyond_hashing_capacity_get_503_quickly(start_auth: StartAuth) -> None:
    server = start_auth(AUTH_HASH_CONCURRENCY="1", AUTH_HASH_QUEUE_TIMEOUT_S="0.05", **SLOW_ARGON2)
    ips = [unique_ip() for _ in range(8)]

    async def login(client: httpx.AsyncClient, ip: str) -> tuple[httpx.Response, float]:
        start = time.monotonic()
        resp = await client.post(
            "/auth/token",
            data={"username": unique_name("ghost"), "password": "not the password"},
            headers={"X-Forwarded-For": ip},
        )
        return resp, time.monotonic() - start

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        results = await asyncio.gather(*(login(client, ip) for ip in ips))
    statuses = [resp.status_code for resp, _ in results]
    assert set(statuses) <= {400, 503}, statuses
    assert statuses.count(400) >= 1, statuses
    assert statuses.count(503) >= 4, statuses  # one slot, 50 ms of queue: most are refused
    for resp, elapsed in results:
        if resp.status_code == 503:
            body = is_problem(resp, 503)
            assert body["type"] == "urn:switchboard:problem:service-unavailable"
            assert int(resp.headers["retry-after"]) >= 1
            assert elapsed < 2.0, elapsed  # refused at once, not after the others' hashes
    # an attempt refused before its password was checked does not count towards a lockout
    client = redis.Redis.from_url(server.redis_url)
    try:
        for (resp, _), ip in zip(results, ips, strict=True):
            if resp.status_code == 503:
                assert int(client.get(f"auth:lockout:ip:{ip}") or 0) == 0
    finally:
        client.close()


# --- lockout against parallel guesses ----------------------------------------------------


@pytest.fixture
def strict_lockout(start_auth: StartAuth) -> AuthServer:
    return start_auth(
        AUTH_LOCKOUT_MAX_FAILURES="3", AUTH_LOCKOUT_IP_MAX_FAILURES="3", **SLOW_ARGON2
    )


async def _parallel_logins(server: AuthServer, attempts: list[tuple[str, str, str]]) -> list[int]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/auth/token",
                    data={"username": name, "password": password},
                    headers={"X-Forwarded-For": ip},
                )
                for name, password, ip in attempts
            )
        )
    for resp in responses:
        if resp.status_code == 429:
            body = is_problem(resp, 429)
            assert body["type"] == "urn:switchboard:problem:login-locked"
            assert int(resp.headers["retry-after"]) > 0
        else:
            assert is_problem(resp, 400)["error"] == "invalid_grant"
    return [resp.status_code for resp in responses]


async def test_parallel_wrong_passwords_cannot_exceed_the_account_limit(
    strict_lockout: AuthServer,
) -> None:
    gateway = GatewayClient(strict_lockout)
    try:
        name = gateway.register()["username"]
    finally:
        gateway.close()
    guesses = [(name, f"wrong password {i}!", unique_ip()) for i in range(12)]
    statuses = await _parallel_logins(strict_lockout, guesses)
    assert statuses.count(400) <= 3, statuses  # at most 3 passwords were verified
    assert statuses.count(429) >= 9, statuses
    # and the right password is refused too until the window ends
    locked = await _parallel_logins(strict_lockout, [(name, PASSWORD, unique_ip())])
    assert locked == [429]


async def test_parallel_guesses_from_one_ip_cannot_exceed_the_ip_limit(
    strict_lockout: AuthServer,
) -> None:
    ip = unique_ip()
    guesses = [(unique_name("ghost"), "wrong password!!", ip) for _ in range(12)]
    statuses = await _parallel_logins(strict_lockout, guesses)
    assert statuses.count(400) <= 3, statuses
    assert statuses.count(429) >= 9, statuses


def test_successful_logins_do_not_use_up_the_ip_budget(strict_lockout: AuthServer) -> None:
    gateway = GatewayClient(strict_lockout)
    try:
        ip = unique_ip()
        names = [gateway.register()["username"] for _ in range(2)]
        for _ in range(2):
            assert gateway.token(unique_name("ghost"), "wrong password!!", ip=ip).status_code == 400
        for name in names * 2:  # four successes from the same IP: each forgives itself
            assert gateway.token(name, PASSWORD, ip=ip).status_code == 200
        assert gateway.token(unique_name("ghost"), "wrong password!!", ip=ip).status_code == 400
        is_problem(gateway.token(names[0], PASSWORD, ip=ip), 429)  # 3 failures: locked
    finally:
        gateway.close()


# --- disabled accounts -----------------------------------------------------------------------


def _comparable(resp: httpx.Response) -> dict[str, object]:
    body = is_problem(resp, 400)
    return {k: v for k, v in body.items() if k not in ("request_id", "trace_id")}


def test_disabled_account_with_the_right_password_looks_like_a_wrong_one(
    gateway: GatewayClient,
) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    name = user["username"]
    for _ in range(4):  # one short of the default lockout (5)
        assert gateway.token(name, "wrong password!!").status_code == 400
    wrong = gateway.token(unique_name("ghost"), "wrong password!!")
    resp = gateway.http.patch(
        f"/auth/admin/users/{user['id']}", json={"disabled": True}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    right_but_disabled = gateway.token(name, PASSWORD)
    assert _comparable(right_but_disabled) == _comparable(wrong)
    assert set(right_but_disabled.headers) == set(wrong.headers)
    assert "disabled" not in right_but_disabled.text

    # the right password did not reset the counter: that attempt was the fifth
    gateway.http.patch(f"/auth/admin/users/{user['id']}", json={"disabled": False}, headers=admin)
    is_problem(gateway.token(name, PASSWORD), 429)
