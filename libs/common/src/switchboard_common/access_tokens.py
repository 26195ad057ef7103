"""Access tokens as a contract: the one place that says what a valid token is.

The auth service mints them; the gateway (and anything else that must check one) verifies
them here, so the two sides cannot drift apart.

Algorithm: ``Ed25519`` — the fully specified JWS name of RFC 9864 for EdDSA over Ed25519
(joserfc 1.8 refuses the polymorphic ``EdDSA`` name, which RFC 9864 deprecates). The
allow-list below is the *only* algorithm accepted: ``none``, HMAC algorithms (the "public
key as HMAC secret" confusion) and everything else fail before any signature work.

Header: ``alg``, ``kid`` (RFC 7638 thumbprint of the key), ``typ: at+jwt`` (RFC 9068).
Claims: :class:`AccessTokenClaims`. ``InvalidToken`` messages are safe to show a client.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ALGORITHM = "Ed25519"
ALLOWED_ALGORITHMS: tuple[str, ...] = (ALGORITHM,)
TOKEN_TYPE = "at+jwt"  # noqa: S105 (RFC 9068 media type)
CLOCK_LEEWAY_S = 30
MAX_TOKEN_BYTES = 8192

JWS_REGISTRY = JWSRegistry(algorithms=list(ALLOWED_ALGORITHMS))


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
    # Optional per-user overrides (absent from tokens of users without one, and from tokens
    # minted before they existed): ``rl`` the rate limit (``300/minute``, ``unlimited``),
    # ``mxp`` the highest queue priority (0..9).
    rl: str | None = Field(default=None, max_length=32)
    mxp: int | None = Field(default=None, ge=0, le=9)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()


def unverified_header(token: str) -> dict[str, object]:
    """The JOSE header, decoded without any check (to find ``kid`` before verifying)."""
    try:
        segment = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, IndexError) as exc:
        raise InvalidToken("The access token is malformed.") from exc
    if not isinstance(header, dict):
        raise InvalidToken("The access token is malformed.")
    return header


def key_id(token: str) -> str:
    """The ``kid`` of a token whose shape, algorithm and type are acceptable."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise InvalidToken("The access token is malformed.")
    header = unverified_header(token)
    if header.get("alg") not in ALLOWED_ALGORITHMS:
        raise InvalidToken("The access token's algorithm is not accepted.")
    if header.get("typ") != TOKEN_TYPE:
        raise InvalidToken(f"The token is not an access token (its type is not {TOKEN_TYPE}).")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("The access token names no signing key (kid).")
    return kid


def verify_access_token(
    token: str,
    public_keys: Mapping[str, OKPKey],
    *,
    issuer: str,
    audience: str,
    now: float | None = None,
    leeway_s: int = CLOCK_LEEWAY_S,
) -> AccessTokenClaims:
    """Check header, signature (by ``kid``) and claims; raise :class:`InvalidToken`."""
    key = public_keys.get(key_id(token))
    if key is None:
        raise InvalidToken("The access token was signed by an unknown key.")
    try:
        decoded = jwt.decode(token, key, algorithms=list(ALLOWED_ALGORITHMS), registry=JWS_REGISTRY)
    except JoseError as exc:
        raise InvalidToken("The access token's signature is not valid.") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidToken("The access token is malformed.") from exc
    registry = jwt.JWTClaimsRegistry(
        now=int(time.time() if now is None else now),
        leeway=leeway_s,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
        sid={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    )
    try:
        registry.validate(decoded.claims)
    except ExpiredTokenError as exc:
        raise InvalidToken("The access token has expired; refresh it at /auth/refresh.") from exc
    except MissingClaimError as exc:
        raise InvalidToken(f"The access token lacks a required claim ({exc.description}).") from exc
    except InvalidClaimError as exc:
        claim = getattr(exc, "claim", "claims")
        if claim in ("nbf", "iat"):
            raise InvalidToken(
                "The access token is not valid yet; check this client's and auth's clocks."
            ) from exc
        raise InvalidToken(f"The access token's {claim} claim is not accepted.") from exc
    except JoseError as exc:
        raise InvalidToken("The access token is not valid.") from exc
    try:
        return AccessTokenClaims.model_validate(decoded.claims)
    except ValidationError as exc:
        raise InvalidToken("The access token lacks a required claim.") from exc
