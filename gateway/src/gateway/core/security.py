"""The gateway's authentication and authorization of proxied requests.

``Authenticator.authorize`` decides, per request: blocked path → 404; public path → pass
with no identity; otherwise a bearer token (local JWT check, cached) or an API key (asked
of auth, cached briefly) must be valid, unrevoked and carry the service's scope. The
caller is then forwarded as gateway-signed identity headers (``switchboard_common.identity``)
and the client's own credential headers are not forwarded.

On the hot path (a cached token) this is: one header scan, one dict lookup, two set
lookups, and reuse of identity headers signed at most 30 s ago. No network call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from redis.asyncio import Redis
from starlette.types import Scope

from gateway.config import Settings
from gateway.core.access import AccessPolicy
from gateway.services.api_keys import API_KEY_PREFIX, ApiKeyVerifier, AuthUnavailable
from gateway.services.jwks import JwksCache
from gateway.services.revocations import Revocations
from gateway.services.token_verifier import TokenVerifier, VerifiedCredential
from gateway.services.upstreams import UpstreamPool
from switchboard_common.access_tokens import InvalidToken
from switchboard_common.identity import Principal

NEED_CREDENTIAL = (
    "Authentication required: send 'Authorization: Bearer <access token>' (from POST "
    "/auth/token) or an API key ('Authorization: Bearer sk-…' or 'X-API-Key')."
)


@dataclass(slots=True)
class Decision:
    """``status`` 0 means go ahead; otherwise the problem to answer with."""

    status: int = 0
    detail: str = ""
    identity: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    principal: Principal | None = None
    extensions: dict[str, object] = field(default_factory=dict)

    def but(
        self,
        *,
        identity: list[tuple[bytes, bytes]] | None = None,
        response_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Decision:
        """A copy with new identity and/or response headers (decisions are cached and
        shared between requests, so never changed in place). ``dataclasses.replace`` would
        do the same at several times the cost, on every request."""
        return Decision(
            self.status,
            self.detail,
            self.identity if identity is None else identity,
            self.response_headers if response_headers is None else response_headers,
            self.principal,
            self.extensions,
        )


PUBLIC = Decision()


def _refuse(status: int, detail: str, error: str | None = None, **ext: object) -> Decision:
    headers: list[tuple[bytes, bytes]] = []
    if status == 401:
        challenge = b'Bearer realm="switchboard"'
        if error:
            challenge += b', error="' + error.encode() + b'"'
        headers.append((b"www-authenticate", challenge))
    elif status == 403 and error:
        headers.append((b"www-authenticate", b'Bearer error="' + error.encode() + b'"'))
    elif status == 503:
        headers.append((b"retry-after", b"1"))
    return Decision(status=status, detail=detail, response_headers=headers, extensions=ext)


def credential_from(scope: Scope) -> str | None:
    """The bearer token or API key a request carries (header, or query for WebSockets)."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, raw in headers:
        if name == b"authorization":
            scheme, _, credential = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name == b"x-api-key" and raw:
            return raw.decode("latin-1").strip()
    query: bytes = scope.get("query_string", b"")
    if scope["type"] == "websocket" and query:
        # Browsers cannot set headers on a WebSocket handshake.
        for key, value in parse_qsl(query.decode("latin-1")):
            if key == "access_token" and value:
                return str(value)
    return None


class Authenticator:
    def __init__(
        self, settings: Settings, pool: UpstreamPool, redis: Redis, listener: Redis
    ) -> None:
        extra_public = tuple(p.strip() for p in settings.public_paths.split(",") if p.strip())
        self.policy = AccessPolicy(extra_public)
        self.secret = settings.internal_secret.get_secret_value().encode()
        self.jwks = JwksCache(
            pool, refresh_s=settings.jwks_refresh_s, min_refetch_s=settings.jwks_min_refetch_s
        )
        self.tokens = TokenVerifier(
            self.jwks,
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway_s=settings.jwt_leeway_s,
            cache_size=settings.token_cache_size,
        )
        self.api_keys = ApiKeyVerifier(pool, self.secret, cache_s=settings.api_key_cache_s)
        self.revocations = Revocations(redis, listener, self._on_revoked)

    async def start(self) -> None:
        self.revocations.start()
        await self.jwks.start()

    async def close(self) -> None:
        await self.revocations.close()
        await self.jwks.close()

    def _on_revoked(self, message: dict[str, str]) -> None:
        if "all" in message:
            self.tokens.clear()
            self.api_keys.clear()
            return
        if sid := message.get("sid"):
            self.tokens.evict(sid=sid)
        if sub := message.get("sub"):
            self.tokens.evict(sub=sub)
            self.api_keys.evict(sub=sub)
        if api_key_id := message.get("api_key_id"):
            self.api_keys.evict(api_key_id=api_key_id)

    async def authorize(self, scope: Scope, service: str) -> Decision:
        rule = self.policy.rule(service, scope["path"])
        if rule.blocked:
            return _refuse(404, f"No public route serves {scope['path']}.")
        if rule.public:
            return PUBLIC
        credential = credential_from(scope)
        if credential is None:
            return _refuse(401, NEED_CREDENTIAL)
        now = time.time()
        try:
            entry = await self._verified(credential, now)
        except InvalidToken as exc:
            return _refuse(401, str(exc), "invalid_token")
        except AuthUnavailable:
            return _refuse(503, "API keys cannot be verified right now (auth unavailable).")
        principal = entry.principal
        if rule.scope is not None and not principal.has_scope(rule.scope):
            return _refuse(
                403,
                f"This route needs the scope '{rule.scope}', which the credential does not carry.",
                "insufficient_scope",
                missing_scopes=[rule.scope],
            )
        return Decision(identity=entry.identity_headers(self.secret, now), principal=principal)

    async def _verified(self, credential: str, now: float) -> VerifiedCredential:
        revoked = self.revocations
        if credential.startswith(API_KEY_PREFIX):
            entry = await self.api_keys.verify(credential, now)
            # issued_at is when this check began, so a user disabled while auth was being
            # asked is still caught
            if revoked.api_key_revoked(entry.principal.api_key_id) or revoked.user_revoked_after(
                entry.principal.sub, entry.issued_at
            ):
                raise InvalidToken("The API key was revoked.")
            return entry
        cached = self.tokens.cached(credential, now)
        if cached is not None:
            entry = cached
        else:
            entry = await self.tokens.verify(credential)
            sid = entry.principal.sid
            if sid is not None and await revoked.sid_marked(sid):
                revoked.sids[sid] = now
                raise InvalidToken("The session was revoked; log in again.")
            self.tokens.remember(credential, entry)
        principal = entry.principal
        if revoked.sid_revoked(principal.sid) or revoked.user_revoked_after(
            principal.sub, entry.issued_at
        ):
            raise InvalidToken("The session was revoked; log in again.")
        return entry
