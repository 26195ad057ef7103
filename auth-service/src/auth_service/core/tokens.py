"""Access tokens: minted here, with Ed25519 signing keys (joserfc, no hand-rolled JOSE).

What a valid token is (algorithm allow-list, ``typ``, claims) is the shared contract in
``switchboard_common.access_tokens``; verification lives there too, so the gateway and this
service cannot disagree. This module adds what only the issuer needs: keys and minting.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.jwk import OKPKey

from switchboard_common.access_tokens import (
    ALGORITHM,
    ALLOWED_ALGORITHMS,
    CLOCK_LEEWAY_S,
    JWS_REGISTRY,
    TOKEN_TYPE,
    AccessTokenClaims,
    InvalidToken,
    verify_access_token,
)

__all__ = [
    "ALGORITHM",
    "ALLOWED_ALGORITHMS",
    "CLOCK_LEEWAY_S",
    "TOKEN_TYPE",
    "AccessTokenClaims",
    "InvalidToken",
    "generate_signing_key",
    "mint_access_token",
    "private_key_from_pem",
    "public_jwk",
    "verify_access_token",
]


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
    rate_limit: str | None = None,
    max_priority: int | None = None,
) -> tuple[str, AccessTokenClaims]:
    """A signed access token; ``rate_limit``/``max_priority`` (the user's overrides) become
    the optional ``rl``/``mxp`` claims and are left out when None."""
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
        rl=rate_limit,
        mxp=max_priority,
    )
    header = {"alg": ALGORITHM, "kid": key.kid, "typ": TOKEN_TYPE}
    token = jwt.encode(
        header,
        claims.model_dump(exclude_none=True),
        key,
        algorithms=list(ALLOWED_ALGORITHMS),
        registry=JWS_REGISTRY,
    )
    return token, claims
