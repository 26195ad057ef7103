"""API keys: create (the secret is in this response only), list, delete; and the gateway's
internal verification route, which only a service credential may call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from auth_service.dependencies import ApiKeysDep, CurrentSession, GatewayPrincipal
from auth_service.models.api_keys import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyIdentity,
    ApiKeyList,
    ApiKeyOut,
    ApiKeyVerifyRequest,
)
from switchboard_common import problem_responses

router = APIRouter(prefix="/auth/api-keys", tags=["api-keys"])
internal_router = APIRouter(prefix="/auth/internal", tags=["internal"])

KeyId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Create an API key (the secret is shown once)",
    responses=problem_responses(401, 403, 422),
)
async def create_api_key(
    body: ApiKeyCreate, current: CurrentSession, api_keys: ApiKeysDep, response: Response
) -> ApiKeyCreated:
    response.headers["Cache-Control"] = "no-store"
    key, secret = await api_keys.create(current.user, body)
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=secret)


@router.get(
    "",
    response_model=ApiKeyList,
    summary="My API keys (never the secrets)",
    responses=problem_responses(401, 403),
)
async def list_api_keys(current: CurrentSession, api_keys: ApiKeysDep) -> ApiKeyList:
    keys = await api_keys.list_active(current.user.id)
    return ApiKeyList(api_keys=[ApiKeyOut.model_validate(k) for k in keys])


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an API key (gateways are told at once)",
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_api_key(key_id: KeyId, current: CurrentSession, api_keys: ApiKeysDep) -> Response:
    await api_keys.delete(current.user.id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@internal_router.post(
    "/api-keys/verify",
    response_model=ApiKeyIdentity,
    summary="Gateway only: who an API key acts for",
    responses=problem_responses(401, 403, 422),
    include_in_schema=False,
)
async def verify_api_key(
    body: ApiKeyVerifyRequest, _gateway: GatewayPrincipal, api_keys: ApiKeysDep, response: Response
) -> ApiKeyIdentity:
    response.headers["Cache-Control"] = "no-store"
    return await api_keys.verify(body.key)
