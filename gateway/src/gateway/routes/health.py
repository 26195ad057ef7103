"""Health endpoints: the gateway's aggregate and each service's own, relayed."""

from typing import Annotated

import aiohttp
from fastapi import APIRouter, Path, Query
from starlette.responses import JSONResponse, Response

from gateway.config import Settings
from gateway.dependencies import SettingsDep, UpstreamsDep
from gateway.models.health import GatewayHealth
from gateway.services.health import check_all, relay
from gateway.services.upstreams import UpstreamPool
from switchboard_common import GatewayTimeout, NotFound, ServiceUnavailable, problem_responses

router = APIRouter(tags=["health"])

ServiceName = Annotated[
    str, Path(description="auth, inference, knowledge or memory", examples=["auth"])
]


@router.get(
    "/health",
    response_model=GatewayHealth,
    summary="Gateway liveness and per-service health",
    description="Always 200 while the gateway serves (status `degraded` when an upstream, "
    "or one instance of it, is down), so a liveness probe never restarts the gateway for "
    "another service's outage. "
    "With `strict=true` a degraded cluster answers 503.",
    responses={503: {"model": GatewayHealth, "description": "strict=true and a service is down"}},
)
async def health(
    settings: SettingsDep,
    upstreams: UpstreamsDep,
    strict: bool = Query(default=False, description="Answer 503 when any service is down."),
) -> JSONResponse:
    results = await check_all(upstreams, settings.health_timeout_s)
    degraded = any(r.status != "ok" for r in results.values()) or any(
        i.status != "ok" for r in results.values() for i in (r.instances or {}).values()
    )
    body = GatewayHealth(
        status="degraded" if degraded else "ok",
        service=settings.service_name,
        version=settings.version,
        upstreams=results,
    )
    return JSONResponse(body.model_dump(), status_code=503 if strict and degraded else 200)


async def _relay(
    endpoint: str, service: str, settings: Settings, upstreams: UpstreamPool
) -> Response:
    if service not in upstreams.base_urls:
        raise NotFound(f"Unknown service '{service}'. Known: {', '.join(upstreams.base_urls)}.")
    try:
        answer = await relay(upstreams, service, endpoint, settings.health_timeout_s)
    except TimeoutError as exc:
        raise GatewayTimeout(f"The {service} service did not answer {endpoint} in time.") from exc
    except aiohttp.ClientError as exc:
        raise ServiceUnavailable(
            f"The {service} service is unreachable: {type(exc).__name__}.", retry_after=1
        ) from exc
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type)


RELAYED = problem_responses(404, 503, 504)


@router.get("/health/{service}", summary="One service's /health", responses=RELAYED)
async def service_health(
    service: ServiceName, settings: SettingsDep, upstreams: UpstreamsDep
) -> Response:
    return await _relay("/health", service, settings, upstreams)


@router.get("/ready/{service}", summary="One service's /ready", responses=RELAYED)
async def service_ready(
    service: ServiceName, settings: SettingsDep, upstreams: UpstreamsDep
) -> Response:
    return await _relay("/ready", service, settings, upstreams)


@router.get("/metrics/{service}", summary="One service's Prometheus metrics", responses=RELAYED)
async def service_metrics(
    service: ServiceName, settings: SettingsDep, upstreams: UpstreamsDep
) -> Response:
    return await _relay("/metrics", service, settings, upstreams)
