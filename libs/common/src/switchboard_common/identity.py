"""Who is calling: the gateway-signed identity every service trusts, and nothing else.

The gateway authenticates a client (JWT or API key), strips any identity headers the client
sent, and forwards the caller to a service as two headers::

    X-Switchboard-Identity:  base64url(JSON of a Principal), no padding
    X-Switchboard-Signature: hex HMAC-SHA256 of that base64url string, keyed with
                             SWITCHBOARD_INTERNAL_SECRET

A credential lives :data:`IDENTITY_TTL_S` seconds (``exp`` in the JSON), so a captured pair
is useless soon after. Services never see a client's token; a request that reaches a
service without a valid pair (a direct hit on its port) is rejected with 401.

Use in routes::

    @router.get("/things")
    async def list_things(principal: CurrentPrincipal) -> ...

    @router.delete("/things/{id}")
    async def delete_thing(principal: Annotated[Principal, require_scopes("admin")]) -> ...

``require_scopes`` is a FastAPI ``Security`` dependency, so the required scopes appear in
the route's signature and in OpenAPI (as OAuth2 scopes of the public password flow at
``/auth/token``, which is what a client uses before the gateway turns it into headers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from switchboard_common.problems import Forbidden, Unauthorized

IDENTITY_HEADER = "X-Switchboard-Identity"
SIGNATURE_HEADER = "X-Switchboard-Signature"
IDENTITY_TTL_S = 60
MAX_IDENTITY_HEADER_BYTES = 8192

PrincipalKind = Literal["user", "api_key", "service"]

#: Scopes a Switchboard token may carry, with what they grant (shown in OpenAPI).
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "inference": "Chat, generate, embed and manage models.",
    "knowledge": "Collections, documents, queries and ask.",
    "memory": "Conversations, facts and context assembly.",
    "admin": "Administer users, roles, tiers and signing keys.",
}

# Declares the public security model in OpenAPI; the token itself is checked by the gateway.
_public_scheme = OAuth2PasswordBearer(
    tokenUrl="/auth/token", scopes=SCOPE_DESCRIPTIONS, auto_error=False
)


class Principal(BaseModel):
    """The authenticated caller, as the gateway vouches for it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str = Field(min_length=1, max_length=200, description="User id (or service name).")
    username: str = Field(max_length=200)
    sid: str | None = Field(default=None, max_length=200, description="Session id, if any.")
    scope: list[str] = Field(default_factory=list, max_length=64)
    tier: str = Field(default="free", max_length=64)
    role: str = Field(default="user", max_length=64)
    kind: PrincipalKind = "user"
    api_key_id: str | None = Field(default=None, max_length=200)
    exp: int = Field(default=0, description="Unix seconds after which the credential is void.")
    # Per-user/per-key settings from auth (optional: None means "the tier's default"), so
    # the gateway limits and prioritises without asking auth, and services can re-check.
    rate_limit: str | None = Field(
        default=None, max_length=32, description="Admin override of the tier's rate limit."
    )
    max_priority: int | None = Field(
        default=None, ge=0, le=9, description="Admin override of the tier's priority cap."
    )
    priority: int | None = Field(
        default=None, ge=0, le=9, description="The API key's default queue priority."
    )

    def has_scope(self, scope: str) -> bool:
        return scope in self.scope


class ApiKeyVerifyRequest(BaseModel):
    """``POST /auth/internal/api-keys/verify`` (gateway → auth): the key to check."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=256)


class ApiKeyIdentity(BaseModel):
    """Who an API key acts for (auth → gateway); ``scope`` is space-separated like a JWT's."""

    sub: str
    username: str
    scope: str
    tier: str
    role: str
    api_key_id: str
    expires_at: datetime | None = None
    rate_limit: str | None = Field(default=None, max_length=32)
    max_priority: int | None = Field(default=None, ge=0, le=9)
    priority: int | None = Field(default=None, ge=0, le=9, description="The key's default.")


def _secret_bytes(secret: str | SecretStr | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def _mac(value: str, secret: str | SecretStr | bytes) -> str:
    return hmac.new(_secret_bytes(secret), value.encode("ascii"), hashlib.sha256).hexdigest()


def sign_identity(
    principal: Principal, secret: str | SecretStr | bytes, now: float | None = None
) -> tuple[str, str]:
    """``(identity header value, signature header value)``; ``exp`` is set to now + 60 s."""
    issued = int(time.time() if now is None else now)
    stamped = principal.model_copy(update={"exp": issued + IDENTITY_TTL_S})
    payload = json.dumps(stamped.model_dump(mode="json"), separators=(",", ":"))
    value = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")
    return value, _mac(value, secret)


#: Header pairs already verified, with their Principal: the gateway signs one pair per
#: caller and reuses it for many requests, so a service checks each pair's HMAC and parses
#: its JSON once, not per request. Bounded; cleared when full. Keyed with the secret, so a
#: pair is only ever trusted under the secret it was checked with; expiry is checked on
#: every use.
_verified: dict[tuple[str, str, bytes], Principal] = {}
_VERIFIED_MAX = 4096


def verify_identity(
    header_value: str, signature: str, secret: str | SecretStr | bytes, now: float | None = None
) -> Principal:
    """The Principal in a signed header pair; raises :class:`Unauthorized` when it is not valid.

    The signature is checked (constant time) before anything in the payload is parsed.
    """
    key = (header_value, signature, _secret_bytes(secret))
    known = _verified.get(key)
    if known is not None:
        if known.exp <= int(time.time() if now is None else now):
            raise Unauthorized("The identity credential has expired.")
        return known
    principal = _verify_identity(header_value, signature, key[2], now)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[key] = principal
    return principal


def _verify_identity(
    header_value: str, signature: str, secret: bytes, now: float | None
) -> Principal:
    if len(header_value) > MAX_IDENTITY_HEADER_BYTES or len(signature) > 128:
        raise Unauthorized("The identity credential is malformed.")
    try:
        value_ascii = header_value.encode("ascii")
        signature_ascii = signature.strip().lower().encode("ascii")
    except UnicodeEncodeError as exc:
        raise Unauthorized("The identity credential is malformed.") from exc
    expected = _mac(header_value, secret).encode("ascii")
    if not hmac.compare_digest(expected, signature_ascii):
        raise Unauthorized("The identity credential's signature is not valid.")
    try:
        raw = base64.urlsafe_b64decode(value_ascii + b"=" * (-len(value_ascii) % 4))
        principal = Principal.model_validate(json.loads(raw))
    except (binascii.Error, ValueError, ValidationError) as exc:
        raise Unauthorized("The identity credential is malformed.") from exc
    if principal.exp <= int(time.time() if now is None else now):
        raise Unauthorized("The identity credential has expired.")
    return principal


async def current_principal(
    request: Request,
    _token: Annotated[str | None, Depends(_public_scheme)],
) -> Principal:
    """FastAPI dependency: the caller from the gateway-signed headers, else 401."""
    value = request.headers.get(IDENTITY_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not value or not signature:
        raise Unauthorized(
            "Authentication required: send a bearer token or an API key through the gateway."
        )
    secret: SecretStr = request.app.state.settings.internal_secret
    return verify_identity(value, signature, secret)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def _scoped_principal(
    security_scopes: SecurityScopes,
    principal: Annotated[Principal, Security(current_principal)],
) -> Principal:
    missing = [s for s in security_scopes.scopes if not principal.has_scope(s)]
    if missing:
        needed = " ".join(security_scopes.scopes)
        raise Forbidden(
            f"This action requires the scope{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(s) for s in missing)}, which the credential does not carry.",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
            missing_scopes=missing,
        )
    return principal


def require_scopes(*scopes: str) -> Any:
    """A dependency that yields the Principal when it carries every scope, else 403.

    ``Annotated[Principal, require_scopes("admin")]``
    """
    return Security(_scoped_principal, scopes=list(scopes))
