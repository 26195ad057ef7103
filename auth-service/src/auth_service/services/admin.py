"""Admin operations on users: list, disable/enable, set role, tier and overrides.

Disabling a user revokes all their sessions (``SET``+``PUBLISH`` per sid) and publishes
``{"sub": …}`` so gateways drop their API-key results too. Demoting an admin revokes their
sessions as well, so the ``admin`` scope does not outlive the role. Role or tier changes
otherwise take effect at the user's next refresh (at most one access-token lifetime), as
do the overrides of the tier's rate limit and priority cap (``rate_limit``,
``max_priority``; an explicit null returns to the tier's default). API keys see them
within the gateway's API-key cache time.
The last active admin cannot be disabled or demoted (409).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.db.stores.users import UserStore
from auth_service.db.tables import User
from auth_service.db.types import utcnow
from auth_service.models.users import UserUpdate
from auth_service.services.revocations import RevocationPublisher
from auth_service.services.sessions import SessionService
from switchboard_common import Conflict, NotFound

logger = logging.getLogger("auth.admin")


class UserAdminService:
    def __init__(
        self, db: AsyncSession, sessions: SessionService, publisher: RevocationPublisher
    ) -> None:
        self.db = db
        self.users = UserStore(db)
        self.sessions = sessions
        self.publisher = publisher

    async def page(self, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        return await self.users.page(limit=limit, offset=offset), await self.users.count()

    async def get(self, user_id: str) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound(f"No user '{user_id}'.")
        return user

    async def update(self, user_id: str, change: UserUpdate, *, actor_id: str) -> User:
        user = await self.get(user_id)
        now = utcnow()
        disabling = change.disabled is True and not user.disabled
        demoting = change.role is not None and change.role != "admin" and user.role == "admin"
        last_admin_at_risk = (disabling or demoting) and user.role == "admin" and not user.disabled
        if last_admin_at_risk and await self.users.count_active_admins() <= 1:
            raise Conflict("This is the last active admin; promote another admin first.")
        if change.disabled is not None:
            user.disabled_at = (user.disabled_at or now) if change.disabled else None
        if change.role is not None:
            user.role = change.role
        if change.tier is not None:
            user.tier = change.tier
        # null is meaningful for the overrides (back to the tier's default): apply when sent
        if "rate_limit" in change.model_fields_set:
            user.rate_limit = change.rate_limit
        if "max_priority" in change.model_fields_set:
            user.max_priority = change.max_priority
        user.updated_at = now
        revoked: list[str] = []
        if disabling or demoting:
            revoked = await self.sessions.revoke_all_for_user(
                user.id, "user_disabled" if disabling else "role_changed"
            )
        await self.db.commit()
        if disabling:
            await self.publisher.user_disabled(user.id, revoked)
        elif demoting:
            await self.publisher.sessions_revoked(revoked)
        logger.info(
            "user updated by admin",
            extra={
                "user_id": user.id,
                "actor_id": actor_id,
                "fields": sorted(change.model_dump(exclude_unset=True)),
            },
        )
        return user
