"""Sessions and their rotating refresh tokens; minting the access tokens.

A login opens a session (the ``sid`` claim) and issues its first refresh token. Each
refresh spends the presented token and issues a new one (rotation). Presenting a spent
token again means it was copied: the whole session is revoked (reuse detection, RFC 9700
§4.14.2), published to the gateways, and the caller gets ``invalid_grant``. The spend is
one conditional UPDATE, so two concurrent refreshes with one token cannot both win.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.config import Settings
from auth_service.core.errors import invalid_grant
from auth_service.core.scopes import allowed_scopes, narrow_scopes
from auth_service.core.security import hash_secret, new_refresh_token
from auth_service.core.tokens import mint_access_token
from auth_service.db.stores.sessions import SessionStore
from auth_service.db.stores.users import UserStore
from auth_service.db.tables import RefreshToken, Session, User
from auth_service.db.types import utcnow
from auth_service.models.tokens import TokenResponse
from auth_service.services.keyring import KeyRing
from auth_service.services.revocations import RevocationPublisher
from switchboard_common import NotFound

logger = logging.getLogger("auth.sessions")


@dataclass(frozen=True)
class ClientInfo:
    user_agent: str | None
    ip: str | None


class SessionService:
    def __init__(
        self,
        db: AsyncSession,
        settings: Settings,
        keyring: KeyRing,
        publisher: RevocationPublisher,
    ) -> None:
        self.db = db
        self.store = SessionStore(db)
        self.users = UserStore(db)
        self.settings = settings
        self.keyring = keyring
        self.publisher = publisher

    async def open(self, user: User, scope: str, client: ClientInfo) -> TokenResponse:
        now = utcnow()
        session = Session(
            id=str(uuid.uuid4()),
            user_id=user.id,
            scope=scope,
            user_agent=(client.user_agent or None) and client.user_agent[:256],
            ip=client.ip,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
            revoked_at=None,
            revoked_reason=None,
        )
        self.store.add(session)
        await self.db.flush()  # the session row before its refresh token (foreign key)
        refresh = self._new_refresh_token(session, now)
        await self.db.commit()
        logger.info("session opened", extra={"user_id": user.id, "sid": session.id})
        return await self._tokens(user, session, scope, refresh)

    async def refresh(self, presented: str, client: ClientInfo) -> TokenResponse:
        now = utcnow()
        token = await self.store.refresh_token_by_hash(hash_secret(presented))
        if token is None:
            raise invalid_grant("The refresh token is not valid.")
        session = await self.store.get(token.session_id)
        if session is None or session.revoked_at is not None:
            raise invalid_grant("The session of this refresh token has been revoked.")
        if token.used_at is not None or not await self.store.spend_refresh_token(token.id, now):
            await self._revoke_now([session.id], "refresh_reuse")
            logger.warning("refresh token reuse; session revoked", extra={"sid": session.id})
            raise invalid_grant("The refresh token was already used; the session has been revoked.")
        if token.expires_at <= now or session.expires_at <= now:
            raise invalid_grant("The refresh token has expired.")
        user = await self.users.get(session.user_id)
        if user is None or user.disabled:
            await self._revoke_now([session.id], "user_disabled")
            raise invalid_grant("This account is disabled.")
        scope = narrow_scopes(
            session.scope, allowed_scopes(user.role, self.settings.default_scope_set)
        )
        session.scope = scope
        session.last_used_at = now
        session.expires_at = now + timedelta(seconds=self.settings.refresh_token_ttl_s)
        if client.user_agent:
            session.user_agent = client.user_agent[:256]
        session.ip = client.ip or session.ip
        refresh = self._new_refresh_token(session, now)
        await self.db.commit()
        return await self._tokens(user, session, scope, refresh)

    async def active_session(self, user_id: str, sid: str) -> Session:
        session = await self.store.get(sid)
        if (
            session is None
            or session.user_id != user_id
            or session.revoked_at is not None
            or session.expires_at <= utcnow()
        ):
            raise NotFound(f"No active session '{sid}'.")
        return session

    async def list_active(self, user_id: str) -> Sequence[Session]:
        return await self.store.active_for_user(user_id, utcnow())

    async def touch(self, session: Session) -> None:
        now = utcnow()
        if (now - session.last_used_at).total_seconds() >= 60:
            session.last_used_at = now
            await self.db.commit()

    async def revoke(self, user_id: str, sid: str, reason: str) -> None:
        """Revoke one of the user's sessions (idempotent: publishes again if already revoked)."""
        session = await self.store.get(sid)
        if session is None or session.user_id != user_id:
            raise NotFound(f"No session '{sid}'.")
        await self._revoke_now([sid], reason)

    async def revoke_all_for_user(self, user_id: str, reason: str) -> list[str]:
        """Revoke every session of a user in the database; the caller publishes."""
        sids = await self.store.active_ids_for_user(user_id)
        await self.store.revoke(sids, utcnow(), reason)
        return sids

    async def _revoke_now(self, sids: Sequence[str], reason: str) -> None:
        await self.store.revoke(sids, utcnow(), reason)
        await self.db.commit()
        await self.publisher.sessions_revoked(sids)

    def _new_refresh_token(self, session: Session, now: datetime) -> str:
        secret = new_refresh_token()
        self.store.add(
            RefreshToken(
                id=str(uuid.uuid4()),
                session_id=session.id,
                token_hash=hash_secret(secret),
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
                used_at=None,
            )
        )
        return secret

    async def _tokens(
        self, user: User, session: Session, scope: str, refresh: str
    ) -> TokenResponse:
        access, _claims = mint_access_token(
            await self.keyring.signing_key(),
            issuer=self.settings.issuer,
            audience=self.settings.audience,
            subject=user.id,
            session_id=session.id,
            scope=scope,
            tier=user.tier,
            role=user.role,
            username=user.username,
            ttl_s=self.settings.access_token_ttl_s,
            rate_limit=user.rate_limit,
            max_priority=user.max_priority,
        )
        return TokenResponse(
            access_token=access,
            expires_in=self.settings.access_token_ttl_s,
            refresh_token=refresh,
            scope=scope,
        )
