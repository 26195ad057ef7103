"""Passwords and opaque secrets.

- :class:`PasswordHasher` — argon2id through argon2-cffi, run off the event loop. Verifying
  against a *dummy hash* when the user does not exist makes an unknown username cost the
  same as a wrong password (no user enumeration by timing).
- :func:`check_password_policy` — minimum/maximum length, not the username.
- Opaque secrets (refresh tokens, API keys) are 256-bit random strings; only their SHA-256
  is stored. A high-entropy secret needs no slow hash: SHA-256 cannot be brute-forced back,
  and it lets the store look a secret up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import anyio
import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

REFRESH_TOKEN_PREFIX = "rt-"  # noqa: S105 (a prefix, not a secret)
API_KEY_PREFIX = "sk-"
API_KEY_DISPLAY_CHARS = 8  # "sk-" + this many characters are shown in listings


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int = 3
    memory_cost: int = 65536  # KiB
    parallelism: int = 4


class PasswordHasher:
    """argon2id hashing and verification; the CPU work runs in a worker thread."""

    def __init__(self, params: Argon2Params) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            type=argon2.Type.ID,
        )
        # Same parameters as real hashes, so verifying against it costs the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; with no hash (unknown user) a dummy is checked."""
        return await anyio.to_thread.run_sync(self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            self._check(self._dummy_hash, password)
            return False
        return self._check(password_hash, password)

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int = 10
    max_length: int = 256


def check_password_policy(password: str, username: str, policy: PasswordPolicy) -> list[str]:
    """The reasons ``password`` is not acceptable (empty when it is)."""
    problems: list[str] = []
    if len(password) < policy.min_length:
        problems.append(f"password must be at least {policy.min_length} characters")
    if len(password) > policy.max_length:
        problems.append(f"password must be at most {policy.max_length} characters")
    if not password.strip():
        problems.append("password must not be blank")
    if password.strip().casefold() == username.strip().casefold():
        problems.append("password must not equal the username")
    return problems


def hash_secret(secret: str) -> str:
    """SHA-256 hex of an opaque high-entropy secret (refresh token, API key)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_display_prefix(key: str) -> str:
    """What listings show to tell keys apart, e.g. ``sk-AbC123xy``; never enough to use it."""
    return key[: len(API_KEY_PREFIX) + API_KEY_DISPLAY_CHARS]
