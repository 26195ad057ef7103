"""API keys (``sk-…``), verified by the auth service and cached for a short time.

The gateway asks ``POST /auth/internal/api-keys/verify`` with its own service credential,
keeps the answer for ``GATEWAY_API_KEY_CACHE_S`` (never past the key's expiry), and drops it
at once when auth publishes the key's revocation. Keys are cached under their SHA-256, so
raw secrets do not sit in the gateway's memory longer than a request. A rejected key is
remembered for a few seconds so a client retrying a bad key cannot load the auth service.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

import aiohttp
from pydantic import ValidationError

from gateway.services.token_verifier import VerifiedCredential
from gateway.services.upstreams import UpstreamPool
from switchboard_common.access_tokens import InvalidToken
from switchboard_common.identity import (
    ApiKeyIdentity,
    ApiKeyVerifyRequest,
    Principal,
    sign_identity,
)

logger = logging.getLogger("switchboard.gateway.api_keys")

API_KEY_PREFIX = "sk-"
NEGATIVE_CACHE_S = 5.0
MAX_ENTRIES = 10_000


class AuthUnavailable(Exception):
    """The auth service could not be asked (down, timeout, broken answer)."""


class ApiKeyVerifier:
    def __init__(self, pool: UpstreamPool, secret: bytes, *, cache_s: float) -> None:
        self.pool = pool
        self.secret = secret
        self.cache_s = cache_s
        self._ok: OrderedDict[str, VerifiedCredential] = OrderedDict()
        self._bad: dict[str, float] = {}

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    async def verify(self, key: str, now: float) -> VerifiedCredential:
        digest = self.digest(key)
        entry = self._ok.get(digest)
        if entry is not None and entry.expires_at > now:
            return entry
        if self._bad.get(digest, 0.0) > now:
            raise InvalidToken("The API key is not valid.")
        identity = await self._ask_auth(key)
        if identity is None:
            self._bad[digest] = now + NEGATIVE_CACHE_S
            if len(self._bad) > MAX_ENTRIES:
                self._bad = {d: t for d, t in self._bad.items() if t > now}
            raise InvalidToken("The API key is not valid.")
        expires = now + self.cache_s
        if identity.expires_at is not None:
            expires = min(expires, identity.expires_at.timestamp())
        principal = Principal(
            sub=identity.sub,
            username=identity.username,
            scope=identity.scope.split(),
            tier=identity.tier,
            role=identity.role,
            kind="api_key",
            api_key_id=identity.api_key_id,
            rate_limit=identity.rate_limit,
            max_priority=identity.max_priority,
            priority=identity.priority,
        )
        entry = VerifiedCredential(principal, expires_at=expires, issued_at=now)  # check start
        self._ok[digest] = entry
        if len(self._ok) > MAX_ENTRIES:
            self._ok.popitem(last=False)
        return entry

    def evict(self, *, api_key_id: str | None = None, sub: str | None = None) -> None:
        doomed = [
            d
            for d, e in self._ok.items()
            if (api_key_id is not None and e.principal.api_key_id == api_key_id)
            or (sub is not None and e.principal.sub == sub)
        ]
        for digest in doomed:
            del self._ok[digest]

    def clear(self) -> None:
        self._ok.clear()

    async def _ask_auth(self, key: str) -> ApiKeyIdentity | None:
        gateway = Principal(sub="gateway", username="gateway", kind="service", scope=[])
        value, signature = sign_identity(gateway, self.secret)
        payload = ApiKeyVerifyRequest(key=key).model_dump_json()
        headers = {
            "content-type": "application/json",
            "x-switchboard-identity": value,
            "x-switchboard-signature": signature,
        }

        async def ask(origin: str) -> tuple[int, bytes]:
            async with self.pool.session.post(
                origin + "/auth/internal/api-keys/verify",
                data=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=3),
            ) as resp:
                return resp.status, await resp.read()

        try:
            status, body = await self.pool.attempt("auth", ask)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise AuthUnavailable(type(exc).__name__) from exc
        if status in (401, 404, 422):
            return None
        if status != 200:
            raise AuthUnavailable(f"auth answered {status}")
        try:
            return ApiKeyIdentity.model_validate_json(body)
        except ValidationError as exc:
            raise AuthUnavailable("auth sent an unexpected answer") from exc
