"""Access-token verification with a cache, so each token's signature is checked once.

Verification (joserfc): the algorithm allow-list is exactly ``Ed25519`` (RFC 9864's fully
specified name; ``none``, HS* and everything else are refused before any key is used), the
header must say ``typ: at+jwt`` and name a ``kid`` the JWKS knows, and ``iss``, ``aud``,
``exp``, ``nbf`` and ``iat`` are checked with a small leeway. A verified token is cached
(LRU, bounded) until it expires; the cache entry also holds the signed identity headers,
re-signed every half identity lifetime. Revocation evicts entries (see revocations.py).
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from dataclasses import dataclass, field

from joserfc import jwt
from joserfc.errors import JoseError

from gateway.services.jwks import JwksCache
from switchboard_common.identity import IDENTITY_TTL_S, Principal, sign_identity

ALGORITHMS = ["Ed25519"]
TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JOSE media type, not a secret)
MAX_TOKEN_BYTES = 8192


class InvalidToken(Exception):
    """The token is not acceptable; the message is safe to show to the client."""


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


def unverified_header(token: str) -> dict[str, object]:
    try:
        segment = token.split(".", 1)[0]
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (ValueError, IndexError) as exc:
        raise InvalidToken("The access token is malformed.") from exc
    if not isinstance(header, dict):
        raise InvalidToken("The access token is malformed.")
    return header


class TokenVerifier:
    def __init__(
        self, jwks: JwksCache, *, issuer: str, audience: str, leeway_s: int, cache_size: int
    ) -> None:
        self.jwks = jwks
        self.cache_size = cache_size
        self.leeway_s = leeway_s
        self.registry = jwt.JWTClaimsRegistry(
            leeway=leeway_s,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            sid={"essential": True},
            iat={"essential": True},
        )
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
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidToken("The access token is malformed.")
        header = unverified_header(token)
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("The access token's algorithm is not accepted.")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("The token is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("The access token names no signing key.")
        keys = await self.jwks.key_for(kid)
        if keys is None:
            raise InvalidToken("The access token was signed by an unknown key.")
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            self.registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(_describe(exc)) from exc
        claims = decoded.claims
        scope = claims.get("scope", "")
        principal = Principal(
            sub=str(claims["sub"]),
            username=str(claims.get("username", "")),
            sid=str(claims["sid"]),
            scope=scope.split() if isinstance(scope, str) else [],
            tier=str(claims.get("tier", "free")),
            role=str(claims.get("role", "user")),
            kind="user",
        )
        return VerifiedCredential(
            principal, expires_at=float(claims["exp"]), issued_at=float(claims["iat"])
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


def _describe(exc: JoseError) -> str:
    name = type(exc).__name__
    if name == "ExpiredTokenError":
        return "The access token has expired; refresh it at /auth/refresh."
    if name == "InvalidClaimError":
        claim = getattr(exc, "claim", "claims")
        if claim in ("nbf", "iat"):
            return "The access token is not valid yet; check this client's and auth's clocks."
        return f"The access token's {claim} claim is not accepted."
    if name == "MissingClaimError":
        return "The access token lacks a required claim."
    if name == "BadSignatureError":
        return "The access token's signature is not valid."
    return "The access token is not valid."
