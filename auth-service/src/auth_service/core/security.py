"""Passwords and opaque secrets.

- :class:`PasswordHasher` — argon2id through argon2-cffi, run off the event loop. Verifying
  against a *dummy hash* when the user does not exist makes an unknown username cost the
  same as a wrong password (no user enumeration by timing).
  Each hash/verify holds ``memory_cost`` KiB for its duration, and anyone can trigger one
  (``/auth/token``, ``/auth/register``), so at most ``concurrency`` run at once (a dedicated
  :class:`anyio.CapacityLimiter`, not anyio's 40-thread default): peak argon2 memory is
  ``concurrency × memory_cost`` KiB (2 × 64 MiB by default). A call that waits longer than
  ``queue_timeout_s`` for a slot gets a 503 problem with ``Retry-After`` instead of piling up.
- :func:`check_password_policy` — minimum/maximum length, not the username.
- Opaque secrets (refresh tokens, API keys) are 256-bit random strings; only their SHA-256
  is stored. A high-entropy secret needs no slow hash: SHA-256 cannot be brute-forced back,
  and it lets the store look a secret up by its hash in one indexed query.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from switchboard_common import ServiceUnavailable

T = TypeVar("T")

REFRESH_TOKEN_PREFIX = "rt-"  # noqa: S105 (a prefix, not a secret)
API_KEY_PREFIX = "sk-"
API_KEY_DISPLAY_CHARS = 8  # "sk-" + this many characters are shown in listings


@dataclass(frozen=True)
class Argon2Params:
    time_cost: int = 3
    memory_cost: int = 65536  # KiB
    parallelism: int = 4


class HashingBusy(ServiceUnavailable):
    """No hashing slot freed up within the queue timeout (503, ``Retry-After``)."""


class PasswordHasher:
    """argon2id hashing and verification; the CPU work runs in a worker thread.

    At most ``concurrency`` hashes/verifications run at once; a caller waits at most
    ``queue_timeout_s`` for a slot, then gets :class:`HashingBusy` (503).
    """

    def __init__(
        self, params: Argon2Params, *, concurrency: int = 2, queue_timeout_s: float = 5.0
    ) -> None:
        if concurrency < 1 or queue_timeout_s <= 0:
            raise ValueError("concurrency must be >= 1 and queue_timeout_s > 0")
        self._hasher = argon2.PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_cost,
            parallelism=params.parallelism,
            type=argon2.Type.ID,
        )
        self.concurrency = concurrency
        self.queue_timeout_s = queue_timeout_s
        # Two limiters of the same size: `_slots` is what callers queue for (with a
        # deadline); `_threads` keeps the work off anyio's shared default thread pool (a
        # task holding a token of `_slots` cannot hand the same limiter to run_sync).
        self._slots = anyio.CapacityLimiter(concurrency)
        self._threads = anyio.CapacityLimiter(concurrency)
        # Same parameters as real hashes, so verifying against it costs the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; with no hash (unknown user) a dummy is checked."""
        return await self._run(lambda: self._verify_sync(password_hash, password))

    async def _run(self, func: Callable[[], T]) -> T:
        with anyio.move_on_after(self.queue_timeout_s) as waiting:
            await self._slots.acquire()
        if waiting.cancelled_caught:  # no slot in time (a cancelled acquire holds none)
            raise HashingBusy(
                "Too many passwords are being checked right now; try again shortly.",
                retry_after=math.ceil(self.queue_timeout_s),
            )
        try:
            return await anyio.to_thread.run_sync(func, limiter=self._threads)
        finally:
            self._slots.release()

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
