"""Test harness for the auth service: a real process, a client that acts like the gateway.

``AuthServer`` describes a running auth-service process (URL, Redis URL, data dir, env).
``GatewayClient`` talks to it the way the gateway would: it verifies access tokens against
the served JWKS and forwards identity as signed ``X-Switchboard-*`` headers.
``RevocationListener`` subscribes to ``auth:revocations`` before an action, then waits for
the expected message.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from joserfc.jwk import OKPKey

from auth_service.core.tokens import AccessTokenClaims, verify_access_token
from switchboard_common import IDENTITY_HEADER, SIGNATURE_HEADER, Principal, sign_identity
from switchboard_devtools.process import ManagedProcess

INTERNAL_SECRET = "auth-tests-internal-secret-4f9c2a"
KEY_ENCRYPTION_SECRET = "auth-tests-key-encryption-secret-77ab"
ADMIN_USERNAME = "root-admin"
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORD = "correct horse battery staple"

FAST_ARGON2 = {
    "AUTH_ARGON2_TIME_COST": "1",
    "AUTH_ARGON2_MEMORY_COST": "1024",
    "AUTH_ARGON2_PARALLELISM": "1",
}

_names = itertools.count(1)
_ips = itertools.count(1)


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_names)}-{time.monotonic_ns() % 100000}"


def unique_ip() -> str:
    """A TEST-NET address for X-Forwarded-For, so lockout counters never collide."""
    n = next(_ips)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def auth_env(port: int, redis_url: str, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        "AUTH_HOST": "127.0.0.1",
        "AUTH_PORT": str(port),
        "AUTH_REDIS_URL": redis_url,
        "AUTH_DATA_DIR": str(data_dir),
        "AUTH_ENVIRONMENT": "test",
        "AUTH_KEY_ENCRYPTION_SECRET": KEY_ENCRYPTION_SECRET,
        "SWITCHBOARD_INTERNAL_SECRET": INTERNAL_SECRET,
        "AUTH_ADMIN_USERNAME": ADMIN_USERNAME,
        "AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "AUTH_API_KEY_SWEEP_INTERVAL_S": "0.3",
        "PYTHONUNBUFFERED": "1",
        **FAST_ARGON2,
    }
    env.update(overrides)
    return env


@dataclass
class AuthServer:
    url: str
    redis_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: ManagedProcess | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


StartAuth = Callable[..., AuthServer]
"""``start_auth(data_dir=None, **env_overrides)``: an auth process for one test."""


def is_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json", resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:switchboard:problem:")
    assert "Traceback" not in resp.text
    return body


@dataclass
class Tokens:
    access_token: str
    refresh_token: str
    scope: str
    expires_in: int

    @classmethod
    def from_response(cls, resp: httpx.Response) -> Tokens:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["token_type"] == "bearer"
        return cls(body["access_token"], body["refresh_token"], body["scope"], body["expires_in"])


class GatewayClient:
    """An httpx client to the auth service plus what the gateway does with credentials."""

    def __init__(self, server: AuthServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def close(self) -> None:
        self.http.close()

    # --- public routes --------------------------------------------------------------
    def register(self, username: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        username = username or unique_name()
        resp = self.http.post("/auth/register", json={"username": username, "password": password})
        assert resp.status_code == 201, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def token(
        self, username: str, password: str, ip: str | None = None, **form: str
    ) -> httpx.Response:
        return self.http.post(
            "/auth/token",
            data={"username": username, "password": password, **form},
            headers={"X-Forwarded-For": ip or unique_ip(), "User-Agent": "auth-tests/1.0"},
        )

    def login(self, username: str, password: str = PASSWORD, **form: str) -> Tokens:
        return Tokens.from_response(self.token(username, password, **form))

    def refresh(self, refresh_token: str) -> httpx.Response:
        return self.http.post("/auth/refresh", json={"refresh_token": refresh_token})

    def jwks(self) -> dict[str, OKPKey]:
        resp = self.http.get("/auth/.well-known/jwks.json")
        assert resp.status_code == 200
        return {key["kid"]: OKPKey.import_key(key) for key in resp.json()["keys"]}

    # --- what the gateway does --------------------------------------------------------
    def verify(self, access_token: str) -> AccessTokenClaims:
        return verify_access_token(
            access_token, self.jwks(), issuer="switchboard-auth", audience="switchboard"
        )

    def user_headers(self, access_token: str) -> dict[str, str]:
        claims = self.verify(access_token)
        return self.principal_headers(
            Principal(
                sub=claims.sub,
                username=claims.username,
                sid=claims.sid,
                scope=claims.scopes,
                tier=claims.tier,
                role=claims.role,
                kind="user",
            )
        )

    def api_key_headers(self, identity: dict[str, Any]) -> dict[str, str]:
        return self.principal_headers(
            Principal(
                sub=identity["sub"],
                username=identity["username"],
                scope=identity["scope"].split(),
                tier=identity["tier"],
                role=identity["role"],
                kind="api_key",
                api_key_id=identity["api_key_id"],
            )
        )

    def service_headers(self) -> dict[str, str]:
        return self.principal_headers(
            Principal(sub="gateway", username="gateway", kind="service", role="service")
        )

    @staticmethod
    def principal_headers(principal: Principal, secret: str = INTERNAL_SECRET) -> dict[str, str]:
        value, signature = sign_identity(principal, secret)
        return {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature}

    def verify_api_key(self, key: str) -> httpx.Response:
        return self.http.post(
            "/auth/internal/api-keys/verify", json={"key": key}, headers=self.service_headers()
        )

    def login_as_admin(self) -> dict[str, str]:
        return self.user_headers(self.login(ADMIN_USERNAME, ADMIN_PASSWORD).access_token)


class RevocationListener:
    """Subscribed to ``auth:revocations`` from construction; ``wait_for`` a message."""

    def __init__(self, redis_url: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe("auth:revocations")
        # wait for the subscribe confirmation: from then on, nothing published is missed
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.1)
            if message and message["type"] == "subscribe":
                break
        else:
            raise AssertionError("no subscribe confirmation from Redis")
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, expected: dict[str, str], within_s: float = 1.0) -> float:
        """Seconds until ``expected`` arrived; fails when it did not within ``within_s``."""
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < within_s:
            message = self.pubsub.get_message(timeout=within_s - elapsed)
            if message and message["type"] == "message":
                payload = json.loads(message["data"])
                self.seen.append(payload)
                if payload == expected:
                    return time.monotonic() - start
        raise AssertionError(f"no {expected} on auth:revocations within {within_s}s: {self.seen}")

    def revoked_sid_ttl(self, sid: str) -> int:
        return int(self.client.ttl(f"auth:revoked:sid:{sid}"))

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


def listening(redis_url: str) -> Iterator[RevocationListener]:
    listener = RevocationListener(redis_url)
    try:
        yield listener
    finally:
        listener.close()
