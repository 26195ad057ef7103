"""Access-token verification with a cache, so each token's signature is checked once.

What makes a token valid is the shared contract (``switchboard_common.access_tokens``:
``Ed25519`` only, ``typ: at+jwt``, ``iss``/``aud``/``exp``/``nbf``/``iat`` with a small
leeway). This module adds what the gateway needs around it: the signing key comes from the
JWKS cache (refetched once for an unknown ``kid``), and a verified token is cached (LRU,
bounded) until it expires, together with the signed identity headers, re-signed every half
identity lifetime. Revocation evicts entries (see revocations.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.services.jwks import JwksCache
from switchboard_common.access_tokens import InvalidToken, key_id, verify_access_token
from switchboard_common.identity import IDENTITY_TTL_S, Principal, sign_identity


@dataclass(slots=True)
class VerifiedCredential:
    """A verified token or API key and the identity headers that vouch for it."""

    principal: Principal
    expires_at: float  # unix seconds; the credential is not used past this
    issued_at: float
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    signed_at: float = 0.0

    def identity_headers(self, secret: bytes, now: float) -> list[tuple[bytes, bytes]]:
        if now - self.signed_at > IDENTITY_TTL_S / 2:
            value, signature = sign_identity(self.principal, secret, now)
            self.headers = [
                (b"x-switchboard-identity", value.encode()),
                (b"x-switchboard-signature", signature.encode()),
            ]
            self.signed_at = now
        return self.headers


class TokenVerifier:
    def __init__(
        self, jwks: JwksCache, *, issuer: str, audience: str, leeway_s: int, cache_size: int
    ) -> None:
        self.jwks = jwks
        self.cache_size = cache_size
        self.leeway_s = leeway_s
        self.issuer = issuer
        self.audience = audience
        self._cache: OrderedDict[str, VerifiedCredential] = OrderedDict()

    def cached(self, token: str, now: float) -> VerifiedCredential | None:
        entry = self._cache.get(token)
        if entry is None:
            return None
        if entry.expires_at + self.leeway_s <= now:
            del self._cache[token]
            return None
        self._cache.move_to_end(token)
        return entry

    async def verify(self, token: str) -> VerifiedCredential:
        """Check signature and claims (no cache); raises :class:`InvalidToken`."""
        keys = await self.jwks.key_for(key_id(token))
        if keys is None:
            raise InvalidToken("The access token was signed by an unknown key.")
        claims = verify_access_token(
            token, keys, issuer=self.issuer, audience=self.audience, leeway_s=self.leeway_s
        )
        principal = Principal(
            sub=claims.sub,
            username=claims.username,
            sid=claims.sid,
            scope=claims.scopes,
            tier=claims.tier,
            role=claims.role,
            kind="user",
            rate_limit=claims.rl,
            max_priority=claims.mxp,
        )
        return VerifiedCredential(
            principal, expires_at=float(claims.exp), issued_at=float(claims.iat)
        )

    def remember(self, token: str, entry: VerifiedCredential) -> None:
        self._cache[token] = entry
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def evict(self, *, sid: str | None = None, sub: str | None = None) -> int:
        doomed = [
            t
            for t, e in self._cache.items()
            if (sid is not None and e.principal.sid == sid)
            or (sub is not None and e.principal.sub == sub)
        ]
        for token in doomed:
            del self._cache[token]
        return len(doomed)

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
