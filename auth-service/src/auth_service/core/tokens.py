"""Access tokens: JWTs signed with Ed25519 through joserfc (no hand-rolled JOSE).

Algorithm: ``Ed25519`` — the fully specified JWS name of RFC 9864 for EdDSA over Ed25519
(joserfc 1.8 refuses the polymorphic ``EdDSA`` name, which RFC 9864 deprecates). Ed25519 is
deterministic (no per-signature nonce to get wrong), small (32-byte keys, 64-byte
signatures) and fast to verify, which the gateway does on every request. The allow-list
below is the *only* algorithm accepted when verifying: ``none``, HMAC algorithms (the
classic "verify an RS/Ed token with the public key as an HMAC secret" confusion) and
everything else fail before any signature work.

Header: ``alg``, ``kid`` (RFC 7638 thumbprint of the key), ``typ: at+jwt`` (RFC 9068).
Claims: see :class:`AccessTokenClaims`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import GuestProtocol, OKPKey
from joserfc.jws import JWSRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ALGORITHM = "Ed25519"
ALLOWED_ALGORITHMS: tuple[str, ...] = (ALGORITHM,)
TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 media type)
CLOCK_LEEWAY_S = 30

_REGISTRY = JWSRegistry(algorithms=list(ALLOWED_ALGORITHMS))


class InvalidToken(Exception):
    """The token must not be accepted; ``reason`` says why (safe to show the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AccessTokenClaims(BaseModel):
    """The claims of a Switchboard access token (contract C)."""

    model_config = ConfigDict(extra="ignore")

    iss: str
    aud: str
    sub: str
    sid: str
    scope: str = Field(description="Space-separated scopes.")
    tier: str
    role: str
    username: str
    iat: int
    nbf: int
    exp: int
    jti: str

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


def generate_signing_key() -> OKPKey:
    """A fresh Ed25519 private key with ``kid`` (thumbprint), ``alg`` and ``use`` set."""
    key = OKPKey.generate_key("Ed25519", parameters={"alg": ALGORITHM, "use": "sig"})
    kid = key.thumbprint()
    return OKPKey.import_key(key.as_dict(private=True, kid=kid))


def private_key_from_pem(pem: bytes, kid: str) -> OKPKey:
    return OKPKey.import_key(pem, parameters={"alg": ALGORITHM, "use": "sig", "kid": kid})


def public_jwk(key: OKPKey) -> dict[str, Any]:
    """The public JWK for JWKS: ``kty``, ``crv``, ``x``, ``kid``, ``alg``, ``use``."""
    return dict(key.as_dict(private=False))


def mint_access_token(
    key: OKPKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    session_id: str,
    scope: str,
    tier: str,
    role: str,
    username: str,
    ttl_s: int,
    now: float | None = None,
) -> tuple[str, AccessTokenClaims]:
    issued = int(time.time() if now is None else now)
    claims = AccessTokenClaims(
        iss=issuer,
        aud=audience,
        sub=subject,
        sid=session_id,
        scope=scope,
        tier=tier,
        role=role,
        username=username,
        iat=issued,
        nbf=issued,
        exp=issued + ttl_s,
        jti=secrets.token_urlsafe(16),
    )
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": TOKEN_TYPE}
    token = jwt.encode(
        header, claims.model_dump(), key, algorithms=list(ALLOWED_ALGORITHMS), registry=_REGISTRY
    )
    return token, claims


def verify_access_token(
    token: str,
    public_keys: Mapping[str, OKPKey],
    *,
    issuer: str,
    audience: str,
    now: float | None = None,
    leeway_s: int = CLOCK_LEEWAY_S,
) -> AccessTokenClaims:
    """Verify signature (by ``kid``), ``typ``, ``iss``, ``aud``, ``exp``/``nbf``/``iat``."""
    if len(token) > 8192:
        raise InvalidToken("token is too large")

    def resolve(obj: GuestProtocol) -> OKPKey:
        kid = obj.headers().get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id (kid)")
        key = public_keys.get(kid)
        if key is None:
            raise InvalidToken("token was signed with an unknown key")
        return key

    try:
        decoded = jwt.decode(
            token, resolve, algorithms=list(ALLOWED_ALGORITHMS), registry=_REGISTRY
        )
    except InvalidToken:
        raise
    except JoseError as exc:
        raise InvalidToken(f"token is not valid ({exc.error})") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidToken("token is malformed") from exc
    if decoded.header.get("typ") != TOKEN_TYPE:
        raise InvalidToken(f"token type is not {TOKEN_TYPE}")
    at = int(time.time() if now is None else now)
    registry = jwt.JWTClaimsRegistry(
        now=at,
        leeway=leeway_s,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
        sid={"essential": True},
        jti={"essential": True},
    )
    try:
        registry.validate(decoded.claims)
    except ExpiredTokenError as exc:
        raise InvalidToken("token has expired") from exc
    except JoseError as exc:
        raise InvalidToken(f"token claims are not valid ({exc.description})") from exc
    try:
        return AccessTokenClaims.model_validate(decoded.claims)
    except ValidationError as exc:
        raise InvalidToken("token claims are incomplete") from exc
