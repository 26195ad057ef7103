"""Queries on users."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.tables import User


class UserStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def by_username(self, username: str) -> User | None:
        result = await self.session.execute(select(User).where(User.username == username))
        return result.scalar_one_or_none()

    def add(self, user: User) -> None:
        self.session.add(user)

    async def page(self, *, limit: int, offset: int) -> Sequence[User]:
        query = select(User).order_by(User.created_at, User.id).limit(limit).offset(offset)
        return (await self.session.execute(query)).scalars().all()

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count(User.id)))).scalar_one())

    async def count_active_admins(self) -> int:
        query = select(func.count(User.id)).where(User.role == "admin", User.disabled_at.is_(None))
        return int((await self.session.execute(query)).scalar_one())
