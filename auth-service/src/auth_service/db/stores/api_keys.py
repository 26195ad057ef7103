"""Queries on API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.tables import ApiKey, User


class ApiKeyStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def get_for_user(self, key_id: str, user_id: str) -> ApiKey | None:
        key = await self.session.get(ApiKey, key_id)
        if key is None or key.user_id != user_id or key.revoked_at is not None:
            return None
        return key

    async def active_for_user(self, user_id: str) -> Sequence[ApiKey]:
        query = (
            select(ApiKey)
            .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at.desc())
        )
        return (await self.session.execute(query)).scalars().all()

    async def with_owner_by_hash(self, key_hash: str) -> tuple[ApiKey, User] | None:
        query = (
            select(ApiKey, User)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == key_hash)
        )
        row = (await self.session.execute(query)).first()
        return None if row is None else (row[0], row[1])

    async def revoke(self, key_id: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        assert isinstance(result, CursorResult)
        return result.rowcount == 1

    async def expired_unrevoked_ids(self, now: datetime, limit: int = 500) -> list[str]:
        query = (
            select(ApiKey.id)
            .where(ApiKey.revoked_at.is_(None), ApiKey.expires_at.is_not(None))
            .where(ApiKey.expires_at <= now)
            .limit(limit)
        )
        return list((await self.session.execute(query)).scalars().all())

    async def touch(self, key_id: str, now: datetime) -> None:
        await self.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now)
        )
