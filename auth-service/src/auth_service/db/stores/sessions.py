"""Queries on sessions and their refresh tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.tables import RefreshToken, Session


class SessionStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: Session | RefreshToken) -> None:
        self.session.add(row)

    async def get(self, session_id: str) -> Session | None:
        return await self.session.get(Session, session_id)

    async def active_for_user(self, user_id: str, now: datetime) -> Sequence[Session]:
        query = (
            select(Session)
            .where(
                Session.user_id == user_id,
                Session.revoked_at.is_(None),
                Session.expires_at > now,
            )
            .order_by(Session.last_used_at.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def active_ids_for_user(self, user_id: str) -> list[str]:
        query = select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
        return list((await self.session.execute(query)).scalars().all())

    async def revoke(self, session_ids: Sequence[str], now: datetime, reason: str) -> None:
        if not session_ids:
            return
        await self.session.execute(
            update(Session)
            .where(Session.id.in_(session_ids), Session.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )

    async def refresh_token_by_hash(self, token_hash: str) -> RefreshToken | None:
        query = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        return (await self.session.execute(query)).scalar_one_or_none()

    async def spend_refresh_token(self, token_id: str, now: datetime) -> bool:
        """Mark the token used; False if it was already spent (atomic, wins once)."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1
