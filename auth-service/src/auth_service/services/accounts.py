"""Accounts: registration, password login (with lockout), loading the caller, first admin.

Login never tells an unknown username from a wrong password: both verify an argon2 hash
(a dummy one for unknown users), count a failure, and answer the same ``invalid_grant``.
A disabled account answers that same ``invalid_grant`` even for the right password (and
its attempt stays counted), so the answer never tells that the password was right.
Each attempt is counted *before* its password is verified (see services/lockout.py).
"""

from __future__ import annotations

import logging
import re
import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.config import Settings
from auth_service.core.errors import (
    RegistrationDisabled,
    UsernameTaken,
    WeakPassword,
    invalid_grant,
)
from auth_service.core.security import (
    HashingBusy,
    PasswordHasher,
    PasswordPolicy,
    check_password_policy,
)
from auth_service.db.stores.users import UserStore
from auth_service.db.tables import User
from auth_service.db.types import utcnow
from auth_service.models.users import USERNAME_PATTERN, RegisterRequest
from auth_service.services.lockout import LoginThrottle
from switchboard_common import Unauthorized

logger = logging.getLogger("auth.accounts")
_USERNAME = re.compile(USERNAME_PATTERN)


def normalize_username(username: str) -> str:
    return username.strip().lower()


def password_policy(settings: Settings) -> PasswordPolicy:
    return PasswordPolicy(
        min_length=settings.password_min_length, max_length=settings.password_max_length
    )


class AccountService:
    def __init__(self, db: AsyncSession, hasher: PasswordHasher, settings: Settings) -> None:
        self.db = db
        self.users = UserStore(db)
        self.hasher = hasher
        self.settings = settings

    async def register(self, request: RegisterRequest) -> User:
        if not self.settings.registration_enabled:
            raise RegistrationDisabled("Self-registration is disabled on this deployment.")
        username = normalize_username(request.username)
        violations = check_password_policy(
            request.password, username, password_policy(self.settings)
        )
        if violations:
            raise WeakPassword("; ".join(violations).capitalize() + ".", violations=violations)
        if await self.users.by_username(username) is not None:
            raise UsernameTaken(f"The username '{username}' is taken.")
        user = await self._create(username, request.password, request.email, role="user")
        try:
            await self.db.commit()
        except IntegrityError as exc:  # a concurrent registration won the race
            await self.db.rollback()
            raise UsernameTaken(f"The username '{username}' is taken.") from exc
        logger.info("user registered", extra={"user_id": user.id})
        return user

    async def authenticate(
        self, username: str, password: str, ip: str | None, throttle: LoginThrottle
    ) -> User:
        """The user for a correct username/password; ``invalid_grant`` otherwise."""
        name = normalize_username(username)
        await throttle.count_attempt(name, ip)  # 429 once the account or IP is used up
        user = await self.users.by_username(name) if _USERNAME.match(name) else None
        try:
            ok = await self.hasher.verify(user.password_hash if user else None, password)
        except HashingBusy:
            await throttle.not_checked(name, ip)  # no password was checked: not a guess
            raise
        if not ok or user is None:
            logger.info("login failed", extra={"ip": ip})
            raise invalid_grant()
        if user.disabled:
            # Same answer as a wrong password, and the attempt stays counted: a disabled
            # account must not confirm a guessed password nor reset its lockout.
            logger.info("login refused: account disabled", extra={"user_id": user.id})
            raise invalid_grant()
        await throttle.succeeded(name, ip)
        if self.hasher.needs_rehash(user.password_hash):
            try:
                user.password_hash = await self.hasher.hash(password)
            except HashingBusy:  # upgrading the hash can wait for the next login
                pass
            else:
                await self.db.commit()
        return user

    async def active_user(self, user_id: str) -> User:
        """The caller's user row, or 401 when it no longer exists or is disabled."""
        user = await self.users.get(user_id)
        if user is None or user.disabled:
            raise Unauthorized("The account behind this credential is missing or disabled.")
        return user

    async def _create(self, username: str, password: str, email: str | None, role: str) -> User:
        now = utcnow()
        user = User(
            id=str(uuid.uuid4()),
            username=username,
            email=email,
            password_hash=await self.hasher.hash(password),
            role=role,
            tier="free",
            created_at=now,
            updated_at=now,
            disabled_at=None,
        )
        self.users.add(user)
        await self.db.flush()
        return user


async def ensure_first_admin(
    sessions: async_sessionmaker[AsyncSession], hasher: PasswordHasher, settings: Settings
) -> None:
    """Create the admin from AUTH_ADMIN_USERNAME/PASSWORD when no admin exists yet.

    An existing non-admin account with that name is *not* promoted (whoever registered it
    knows its password); the process refuses to start instead.
    """
    if settings.admin_username is None or settings.admin_password is None:
        return
    username = normalize_username(settings.admin_username)
    password = settings.admin_password.get_secret_value()
    async with sessions() as db:
        service = AccountService(db, hasher, settings)
        if await service.users.count_active_admins() > 0:
            return
        existing = await service.users.by_username(username)
        if existing is not None:
            if existing.role == "admin":
                return
            raise RuntimeError(
                f"AUTH_ADMIN_USERNAME '{username}' belongs to an existing non-admin account; "
                "choose another name (it is not promoted automatically)."
            )
        if not _USERNAME.match(username):
            raise RuntimeError("AUTH_ADMIN_USERNAME is not a valid username")
        violations = check_password_policy(password, username, password_policy(settings))
        if violations:
            raise RuntimeError("AUTH_ADMIN_PASSWORD is rejected: " + "; ".join(violations))
        user = await service._create(username, password, None, role="admin")
        await db.commit()
        logger.info("first admin created", extra={"user_id": user.id, "username": username})
