"""Placeholder route under the service's public prefix, so routing is testable."""

from typing import Annotated, Any

from fastapi import APIRouter

from inference_service.dependencies import PoolDep, SettingsDep
from inference_service.models.status import Pong
from switchboard_common import problem_responses
from switchboard_common.identity import Principal, require_scopes

router = APIRouter(prefix="/inference", tags=["inference"])


@router.get("/ping", response_model=Pong, summary="Answer with the service's name")
async def ping(settings: SettingsDep) -> Pong:
    return Pong(service=settings.service_name, version=settings.version)


@router.get(
    "/whoami",
    response_model=Principal,
    summary="The caller, as the gateway vouches for it (needs the 'inference' scope)",
    responses=problem_responses(401, 403),
)
async def whoami(principal: Annotated[Principal, require_scopes("inference")]) -> Principal:
    return principal


@router.get(
    "/backends",
    summary="Ollama backends: breaker state and cached models",
    responses=problem_responses(401, 403),
)
async def backends(_: Annotated[Principal, require_scopes("inference")], pool: PoolDep) -> Any:
    return {"backends": pool.status()}
