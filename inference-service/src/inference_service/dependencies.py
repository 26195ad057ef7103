"""Named dependencies for the inference service's routes."""

from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from redis.asyncio import Redis

from inference_service.config import Settings
from inference_service.services.admission import AdmissionGate, PriorityRequest, clamp_priority
from inference_service.services.backends import BackendPool
from inference_service.services.inference import InferenceService
from inference_service.services.response_cache import ResponseCache
from inference_service.services.usage import UsageLedger
from switchboard_common.identity import Principal, require_scopes


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


RedisDep = Annotated[Redis, Depends(get_redis)]


def get_pool(request: Request) -> BackendPool:
    pool: BackendPool = request.app.state.backend_pool
    return pool


PoolDep = Annotated[BackendPool, Depends(get_pool)]


def get_admission(request: Request) -> AdmissionGate:
    """The admission gate on ``app.state.admission`` (the queue replaces the default)."""
    gate: AdmissionGate = request.app.state.admission
    return gate


AdmissionDep = Annotated[AdmissionGate, Depends(get_admission)]


def get_ledger(redis: RedisDep, settings: SettingsDep) -> UsageLedger:
    return UsageLedger(redis, settings.usage_retention_days)


LedgerDep = Annotated[UsageLedger, Depends(get_ledger)]


def inference_for(app: FastAPI) -> InferenceService:
    """An ``InferenceService`` over the app's pool, current admission gate and Redis."""
    settings: Settings = app.state.settings
    ledger = UsageLedger(app.state.redis, settings.usage_retention_days)
    cache = (
        ResponseCache(app.state.redis, settings.cache_ttl_s, settings.cache_max_bytes)
        if settings.cache_enabled
        else None
    )
    return InferenceService(
        app.state.backend_pool, app.state.admission, ledger, settings.max_prompt_bytes, cache
    )


def get_inference(request: Request) -> InferenceService:
    return inference_for(request.app)


InferenceDep = Annotated[InferenceService, Depends(get_inference)]


def header_priority(
    principal: Annotated[Principal, require_scopes("inference")],
    settings: SettingsDep,
    x_priority: Annotated[str | None, Header()] = None,
) -> PriorityRequest:
    """The ``X-Priority`` the caller asked for (0..9, None when absent) and the cap of its
    tier, taken from the gateway-signed identity: a free user cannot jump the queue."""
    requested = None if x_priority is None else clamp_priority(x_priority)
    return PriorityRequest(requested, settings.priority_cap(principal.tier, principal.role))


HeaderPriority = Annotated[PriorityRequest, Depends(header_priority)]

InferenceUser = Annotated[Principal, require_scopes("inference")]
AdminUser = Annotated[Principal, require_scopes("inference", "admin")]
