"""Named dependencies for the inference service's routes.

Every dependency here is ``async def`` although none awaits anything: FastAPI runs a plain
``def`` dependency in the thread pool, and on the streaming path those hops were the
largest part of the service's added time to first token — each one wakes a worker
thread, and under CPU contention the event loop then waits for the GIL (up to the 5 ms
switch interval) whenever it makes a syscall (docs/queue.md#latency).
"""

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


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


RedisDep = Annotated[Redis, Depends(get_redis)]


async def get_pool(request: Request) -> BackendPool:
    pool: BackendPool = request.app.state.backend_pool
    return pool


PoolDep = Annotated[BackendPool, Depends(get_pool)]


async def get_admission(request: Request) -> AdmissionGate:
    """The admission gate on ``app.state.admission`` (the queue replaces the default)."""
    gate: AdmissionGate = request.app.state.admission
    return gate


AdmissionDep = Annotated[AdmissionGate, Depends(get_admission)]


async def get_ledger(request: Request) -> UsageLedger:
    ledger: UsageLedger = request.app.state.usage_ledger
    return ledger


LedgerDep = Annotated[UsageLedger, Depends(get_ledger)]


def inference_for(app: FastAPI) -> InferenceService:
    """An ``InferenceService`` over the app's pool, current admission gate and Redis."""
    settings: Settings = app.state.settings
    ledger: UsageLedger = app.state.usage_ledger
    cache = (
        ResponseCache(app.state.redis, settings.cache_ttl_s, settings.cache_max_bytes)
        if settings.cache_enabled
        else None
    )
    return InferenceService(
        app.state.backend_pool, app.state.admission, ledger, settings.max_prompt_bytes, cache
    )


async def get_inference(request: Request) -> InferenceService:
    return inference_for(request.app)


InferenceDep = Annotated[InferenceService, Depends(get_inference)]


async def header_priority(
    principal: Annotated[Principal, require_scopes("inference")],
    settings: SettingsDep,
    x_priority: Annotated[str | None, Header()] = None,
) -> PriorityRequest:
    """The ``X-Priority`` the caller asked for (0..9, None when absent) and its cap (its
    max_priority, else its tier's), taken from the gateway-signed identity: a free user
    cannot jump the queue. (Async: a sync dependency costs a thread-pool hop per request.)"""
    requested = None if x_priority is None else clamp_priority(x_priority)
    tier_cap = settings.priority_cap(principal.tier, principal.role)
    return PriorityRequest.for_principal(principal, requested, tier_cap)


HeaderPriority = Annotated[PriorityRequest, Depends(header_priority)]

InferenceUser = Annotated[Principal, require_scopes("inference")]
AdminUser = Annotated[Principal, require_scopes("inference", "admin")]
