"""Named dependencies for the auth service's routes.

Identity comes from the gateway-signed headers (``switchboard_common.identity``); these
dependencies turn it into the caller's *current* database state, so a disabled user or a
revoked session is refused here too, not only at the gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.config import Settings
from auth_service.db.tables import Session, User
from auth_service.lifespan import AuthComponents
from auth_service.services.accounts import AccountService
from auth_service.services.admin import UserAdminService
from auth_service.services.api_keys import ApiKeyService
from auth_service.services.keyring import KeyRing
from auth_service.services.lockout import LoginThrottle
from auth_service.services.sessions import ClientInfo, SessionService
from switchboard_common import (
    CurrentPrincipal,
    Forbidden,
    NotFound,
    Principal,
    Unauthorized,
    require_scopes,
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


RedisDep = Annotated[Redis, Depends(get_redis)]


async def get_components(request: Request) -> AuthComponents:
    components: AuthComponents = request.app.state.auth
    return components


ComponentsDep = Annotated[AuthComponents, Depends(get_components)]


async def get_db(components: ComponentsDep) -> AsyncIterator[AsyncSession]:
    async with components.sessions() as session:
        yield session


DbDep = Annotated[AsyncSession, Depends(get_db)]


async def get_client_info(request: Request) -> ClientInfo:
    """User-Agent and client IP (X-Forwarded-For is believed from trusted proxies only)."""
    user_agent = request.headers.get("user-agent")
    return ClientInfo(
        user_agent=user_agent[:256] if user_agent else None,
        ip=request.client.host[:64] if request.client else None,
    )


ClientDep = Annotated[ClientInfo, Depends(get_client_info)]


async def get_accounts(db: DbDep, components: ComponentsDep) -> AccountService:
    return AccountService(db, components.hasher, components.settings)


async def get_sessions(db: DbDep, components: ComponentsDep) -> SessionService:
    return SessionService(db, components.settings, components.keyring, components.publisher)


async def get_api_keys(db: DbDep, components: ComponentsDep) -> ApiKeyService:
    return ApiKeyService(db, components.settings, components.publisher)


async def get_keyring(components: ComponentsDep) -> KeyRing:
    return components.keyring


async def get_throttle(components: ComponentsDep) -> LoginThrottle:
    return components.throttle


AccountsDep = Annotated[AccountService, Depends(get_accounts)]
SessionsDep = Annotated[SessionService, Depends(get_sessions)]
ApiKeysDep = Annotated[ApiKeyService, Depends(get_api_keys)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
ThrottleDep = Annotated[LoginThrottle, Depends(get_throttle)]


async def get_user_admin(
    db: DbDep, sessions: SessionsDep, components: ComponentsDep
) -> UserAdminService:
    return UserAdminService(db, sessions, components.publisher)


UserAdminDep = Annotated[UserAdminService, Depends(get_user_admin)]


async def current_user(principal: CurrentPrincipal, accounts: AccountsDep) -> User:
    """The calling user (through a session token or an API key), active in the database."""
    if principal.kind == "service":
        raise Forbidden("This route acts for a user; a service credential has none.")
    return await accounts.active_user(principal.sub)


CurrentUser = Annotated[User, Depends(current_user)]


@dataclass(frozen=True)
class SessionContext:
    principal: Principal
    user: User
    session: Session


async def current_session(
    principal: CurrentPrincipal, accounts: AccountsDep, sessions: SessionsDep
) -> SessionContext:
    """The caller's user *and* live session: for routes that need a password login."""
    if principal.kind != "user" or not principal.sid:
        raise Forbidden("This route needs a login session (an access token); API keys have none.")
    user = await accounts.active_user(principal.sub)
    try:
        session = await sessions.active_session(user.id, principal.sid)
    except NotFound as exc:
        raise Unauthorized("The session has been revoked or has expired.") from exc
    await sessions.touch(session)
    return SessionContext(principal=principal, user=user, session=session)


CurrentSession = Annotated[SessionContext, Depends(current_session)]


async def admin_user(
    principal: Annotated[Principal, require_scopes("admin")], accounts: AccountsDep
) -> User:
    """An admin: the credential carries ``admin`` and the account still has the role."""
    user = await accounts.active_user(principal.sub)
    if user.role != "admin":
        raise Forbidden("This action requires the admin role.")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


async def gateway_principal(principal: CurrentPrincipal) -> Principal:
    """Internal routes: only a service credential (the gateway) may call them."""
    if principal.kind != "service":
        raise Forbidden("Internal route: only the gateway may call it.")
    return principal


GatewayPrincipal = Annotated[Principal, Depends(gateway_principal)]
