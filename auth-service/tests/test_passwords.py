"""Passwords: policy, argon2id hashing, the dummy hash that hides unknown users, and the
limit on hashes running at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from auth_service.core.security import (
    Argon2Params,
    HashingBusy,
    PasswordHasher,
    PasswordPolicy,
    check_password_policy,
)

FAST = Argon2Params(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.mark.parametrize(
    ("password", "username", "expected"),
    [
        ("short", "alice", "at least 10"),
        ("x" * 300, "alice", "at most 256"),
        ("Alice-The-Great", "alice-the-great", "must not equal the username"),
        (" " * 12, "alice", "must not be blank"),
    ],
)
def test_policy_rejects(password: str, username: str, expected: str) -> None:
    problems = check_password_policy(password, username, PasswordPolicy())
    assert any(expected in p for p in problems), problems


def test_policy_accepts_a_good_password() -> None:
    assert check_password_policy("correct horse battery", "alice", PasswordPolicy()) == []


def test_policy_min_length_is_configurable() -> None:
    assert check_password_policy("abcdefgh", "bob", PasswordPolicy(min_length=8)) == []
    assert check_password_policy("abcdefgh", "bob", PasswordPolicy(min_length=12))


async def test_hash_is_argon2id_and_verifies() -> None:
    hasher = PasswordHasher(FAST)
    hashed = await hasher.hash("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert await hasher.verify(hashed, "correct horse battery")
    assert not await hasher.verify(hashed, "wrong horse battery")
    assert not await hasher.verify("not-a-hash", "anything")


async def test_rehash_needed_when_parameters_grow() -> None:
    weak = await PasswordHasher(FAST).hash("correct horse battery")
    stronger = PasswordHasher(Argon2Params(time_cost=2, memory_cost=2048, parallelism=1))
    assert stronger.needs_rehash(weak)
    assert not PasswordHasher(FAST).needs_rehash(weak)


async def test_unknown_user_costs_a_real_verification() -> None:
    """verify(None, …) must do argon2 work comparable to a real hash, not return early."""
    hasher = PasswordHasher(Argon2Params(time_cost=2, memory_cost=8192, parallelism=1))
    real = await hasher.hash("correct horse battery")

    def timed(password_hash: str | None) -> float:
        start = time.perf_counter()
        hasher._verify_sync(password_hash, "wrong password!")
        return time.perf_counter() - start

    known = min(timed(real) for _ in range(3))
    unknown = min(timed(None) for _ in range(3))
    assert not await hasher.verify(None, "correct horse battery")
    assert unknown > known * 0.5, (known, unknown)


class _SlowCountingHasher:
    """Stands in for argon2-cffi's hasher: counts verifications running at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _work(self) -> None:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1

    def verify(self, password_hash: str, password: str) -> bool:
        self._work()
        return False

    def hash(self, password: str) -> str:
        self._work()
        return "$argon2id$fake"


def _instrumented(seconds: float, **limits: Any) -> tuple[PasswordHasher, _SlowCountingHasher]:
    hasher = PasswordHasher(FAST, **limits)
    fake = _SlowCountingHasher(seconds)
    hasher._hasher = fake  # type: ignore[assignment]
    return hasher, fake


async def test_hashing_never_runs_more_than_the_concurrency_limit() -> None:
    hasher, fake = _instrumented(0.05, concurrency=2, queue_timeout_s=10)
    calls = [hasher.verify(None, "x") for _ in range(6)] + [hasher.hash("y") for _ in range(4)]
    await asyncio.gather(*calls)
    assert fake.peak == 2  # bounded, and the bound is used


async def test_waiting_past_the_queue_timeout_is_a_503_and_frees_nothing() -> None:
    hasher, fake = _instrumented(0.5, concurrency=1, queue_timeout_s=0.05)
    first = asyncio.ensure_future(hasher.verify(None, "x"))
    await asyncio.sleep(0.01)  # the first holds the only slot
    start = time.monotonic()
    with pytest.raises(HashingBusy) as refused:
        await hasher.verify(None, "x")
    assert time.monotonic() - start < 0.3  # refused after the queue wait, not the hash
    assert refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "1"
    assert await first is False
    assert await hasher.verify(None, "x") is False  # the slot was given back
    assert fake.peak == 1
