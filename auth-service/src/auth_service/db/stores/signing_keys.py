"""Queries on signing keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.tables import SigningKey

NEXT, CURRENT, RETIRED = "next", "current", "retired"


class SigningKeyStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, key: SigningKey) -> None:
        self.session.add(key)

    async def published(self, retired_after: datetime) -> Sequence[SigningKey]:
        """Keys that may still verify (or will soon sign) a token, newest first."""
        query = (
            select(SigningKey)
            .where(
                or_(
                    SigningKey.state.in_((NEXT, CURRENT)),
                    SigningKey.retired_at > retired_after,
                )
            )
            .order_by(SigningKey.created_at.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def in_state(self, state: str) -> Sequence[SigningKey]:
        query = (
            select(SigningKey)
            .where(SigningKey.state == state)
            .order_by(SigningKey.created_at.desc())
            .with_for_update()
        )
        return (await self.session.execute(query)).scalars().all()

    async def all(self) -> Sequence[SigningKey]:
        query = select(SigningKey).order_by(SigningKey.created_at.desc())
        return (await self.session.execute(query)).scalars().all()
