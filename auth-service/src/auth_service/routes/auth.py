"""Public account routes: register, token (password and refresh grants), refresh, and the
caller's own ``me`` and ``logout``.

``POST /auth/token`` speaks RFC 6749: a form body, ``error`` codes (``invalid_request``,
``invalid_grant``, ``invalid_scope``, ``unsupported_grant_type``) carried inside the
problem+json body, and ``Cache-Control: no-store`` on tokens. A form that cannot be parsed
at all (wrong types, over-long fields) is a 422 problem like everywhere else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response, status
from pydantic import BaseModel, Field

from auth_service.core.errors import OAuthError
from auth_service.core.scopes import InvalidScope, allowed_scopes, grant_scopes
from auth_service.dependencies import (
    AccountsDep,
    ClientDep,
    CurrentSession,
    CurrentUser,
    SessionsDep,
    SettingsDep,
    ThrottleDep,
)
from auth_service.models.tokens import RefreshRequest, TokenResponse
from auth_service.models.users import MeResponse, RegisterRequest, UserOut
from switchboard_common import CurrentPrincipal, problem_responses

router = APIRouter(prefix="/auth", tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenForm(BaseModel):
    """The token request form (``application/x-www-form-urlencoded``)."""

    grant_type: str | None = Field(default=None, max_length=64)
    username: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=1024)
    scope: str | None = Field(default=None, max_length=512)
    refresh_token: str | None = Field(default=None, max_length=512)
    client_id: str | None = Field(default=None, max_length=256)
    client_secret: str | None = Field(default=None, max_length=256)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    summary="Create an account",
    responses=problem_responses(403, 409, 422, 503),
)
async def register(body: RegisterRequest, accounts: AccountsDep) -> UserOut:
    return UserOut.model_validate(await accounts.register(body))


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="OAuth2 token endpoint (password and refresh_token grants)",
    responses=problem_responses(400, 422, 429, 503),
)
async def token(
    form: Annotated[TokenForm, Form()],
    response: Response,
    accounts: AccountsDep,
    sessions: SessionsDep,
    throttle: ThrottleDep,
    client: ClientDep,
    settings: SettingsDep,
) -> TokenResponse:
    response.headers.update(NO_STORE)
    grant = form.grant_type or "password"
    if grant == "refresh_token":
        if not form.refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required for this grant.")
        return await sessions.refresh(form.refresh_token, client)
    if grant != "password":
        raise OAuthError("unsupported_grant_type", f"grant_type '{grant[:64]}' is not supported.")
    if not form.username or not form.password:
        raise OAuthError("invalid_request", "username and password are required.")
    user = await accounts.authenticate(form.username, form.password, client.ip, throttle)
    try:
        scope = grant_scopes(form.scope, allowed_scopes(user.role, settings.default_scope_set))
    except InvalidScope as exc:
        raise OAuthError("invalid_scope", f"{exc}: {' '.join(exc.scopes)}".strip()) from exc
    return await sessions.open(user, scope, client)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    summary="Exchange a refresh token for new tokens (the old one is spent)",
    responses=problem_responses(400, 422, 503),
)
async def refresh(
    body: RefreshRequest, response: Response, sessions: SessionsDep, client: ClientDep
) -> TokenResponse:
    response.headers.update(NO_STORE)
    return await sessions.refresh(body.refresh_token, client)


@router.get(
    "/me",
    response_model=MeResponse,
    summary="The calling user",
    responses=problem_responses(401, 403),
)
async def me(user: CurrentUser, principal: CurrentPrincipal) -> MeResponse:
    return MeResponse(
        **UserOut.model_validate(user).model_dump(),
        scope=principal.scope,
        session_id=principal.sid,
        auth=principal.kind,
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the current session",
    responses=problem_responses(401, 403, 503),
)
async def logout(current: CurrentSession, sessions: SessionsDep) -> Response:
    await sessions.revoke(current.user.id, current.session.id, "logout")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
