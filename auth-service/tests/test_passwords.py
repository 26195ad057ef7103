"""Passwords: policy, argon2id hashing, and the dummy hash that hides unknown users."""

from __future__ import annotations

import time

import pytest

from auth_service.core.security import (
    Argon2Params,
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
