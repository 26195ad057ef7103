"""API keys: create (secret shown once), list, delete, verify for the gateway, expire.

Keys are ``sk-`` + 256 random bits; only their SHA-256 is stored. A key's scopes are a
subset of its owner's, checked at creation and narrowed again at every verification (the
owner's role may have changed). Deleting a key, or its expiry (found by the periodic sweep
or by a verification), publishes ``{"api_key_id": …}`` so gateways drop cached results.
``last_used_at`` is written at most once per ``api_key_touch_interval_s`` per key.
A key may carry a default queue ``priority``: refused at creation above the owner's
``max_priority`` override, and capped again at every verification (the override may have
been lowered since); the gateway caps it by the tier as well.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.config import ADMIN_SCOPE, Settings
from auth_service.core.scopes import InvalidScope, allowed_scopes, grant_scopes, narrow_scopes
from auth_service.core.security import api_key_display_prefix, hash_secret, new_api_key
from auth_service.db.stores.api_keys import ApiKeyStore
from auth_service.db.tables import ApiKey, User
from auth_service.db.types import utcnow
from auth_service.models.api_keys import ApiKeyCreate, ApiKeyIdentity
from auth_service.services.revocations import RevocationPublisher
from switchboard_common import NotFound, Unauthorized, UnprocessableContent

logger = logging.getLogger("auth.api_keys")
MAX_KEYS_PER_USER = 100


class ApiKeyService:
    def __init__(
        self, db: AsyncSession, settings: Settings, publisher: RevocationPublisher
    ) -> None:
        self.db = db
        self.store = ApiKeyStore(db)
        self.settings = settings
        self.publisher = publisher

    async def create(self, owner: User, request: ApiKeyCreate) -> tuple[ApiKey, str]:
        allowed = allowed_scopes(owner.role, self.settings.default_scope_set)
        try:
            scope = grant_scopes(request.scope or " ".join(allowed - {ADMIN_SCOPE}), allowed)
        except InvalidScope as exc:
            raise UnprocessableContent(
                f"Invalid scope: {exc}.", slug="invalid-scope", scopes=exc.scopes
            ) from exc
        if (
            request.priority is not None
            and owner.max_priority is not None
            and request.priority > owner.max_priority
        ):
            raise UnprocessableContent(
                f"priority {request.priority} is above the highest your account may use "
                f"({owner.max_priority}).",
                slug="priority-above-cap",
                max_priority=owner.max_priority,
            )
        if len(await self.store.active_for_user(owner.id)) >= MAX_KEYS_PER_USER:
            raise UnprocessableContent(f"At most {MAX_KEYS_PER_USER} API keys per account.")
        now = utcnow()
        secret = new_api_key()
        key = ApiKey(
            id=str(uuid.uuid4()),
            user_id=owner.id,
            name=request.name,
            prefix=api_key_display_prefix(secret),
            key_hash=hash_secret(secret),
            scope=scope,
            created_at=now,
            expires_at=(
                now + timedelta(seconds=request.expires_in_s) if request.expires_in_s else None
            ),
            last_used_at=None,
            revoked_at=None,
            priority=request.priority,
        )
        self.store.add(key)
        await self.db.commit()
        logger.info("api key created", extra={"user_id": owner.id, "api_key_id": key.id})
        return key, secret

    async def list_active(self, owner_id: str) -> Sequence[ApiKey]:
        now = utcnow()
        keys = await self.store.active_for_user(owner_id)
        return [k for k in keys if k.expires_at is None or k.expires_at > now]

    async def delete(self, owner_id: str, key_id: str) -> None:
        key = await self.store.get_for_user(key_id, owner_id)
        if key is None:
            raise NotFound(f"No API key '{key_id}'.")
        await self.store.revoke(key_id, utcnow())
        await self.db.commit()
        await self.publisher.api_key_revoked(key_id)
        logger.info("api key deleted", extra={"user_id": owner_id, "api_key_id": key_id})

    async def verify(self, secret: str) -> ApiKeyIdentity:
        """Who the key acts for; 401 (one message for every failure) when it is not valid."""
        found = await self.store.with_owner_by_hash(hash_secret(secret))
        invalid = Unauthorized("The API key is not valid.")
        if found is None:
            raise invalid
        key, owner = found
        now = utcnow()
        if key.revoked_at is not None or owner.disabled:
            raise invalid
        if key.expires_at is not None and key.expires_at <= now:
            await self._expire([key.id])
            raise invalid
        scope = narrow_scopes(
            key.scope, allowed_scopes(owner.role, self.settings.default_scope_set)
        )
        interval = self.settings.api_key_touch_interval_s
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= interval:
            await self.store.touch(key.id, now)
            await self.db.commit()
        return ApiKeyIdentity(
            sub=owner.id,
            username=owner.username,
            scope=scope,
            tier=owner.tier,
            role=owner.role,
            api_key_id=key.id,
            expires_at=key.expires_at,
            rate_limit=owner.rate_limit,
            max_priority=owner.max_priority,
            # a key made before its owner's cap was lowered must not outrank the owner
            priority=_capped(key.priority, owner.max_priority),
        )

    async def _expire(self, key_ids: Sequence[str]) -> int:
        now = utcnow()
        newly = [key_id for key_id in key_ids if await self.store.revoke(key_id, now)]
        await self.db.commit()
        for key_id in newly:
            await self.publisher.api_key_revoked(key_id)
        if newly:
            logger.info("api keys expired", extra={"count": len(newly)})
        return len(newly)

    async def sweep_expired(self) -> int:
        return await self._expire(await self.store.expired_unrevoked_ids(utcnow()))


def _capped(priority: int | None, cap: int | None) -> int | None:
    return priority if priority is None or cap is None else min(priority, cap)


async def sweep_expired_keys(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, publisher: RevocationPublisher
) -> int:
    async with sessions() as db:
        return await ApiKeyService(db, settings, publisher).sweep_expired()
