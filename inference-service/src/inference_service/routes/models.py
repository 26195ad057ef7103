"""Native model management: ``/inference/models…``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from inference_service.core.sse import SSE_HEADERS, error_problem, sse
from inference_service.dependencies import AdminUser, InferenceUser, PoolDep
from inference_service.models.inference import PullRequest
from inference_service.services.catalog import ModelCatalog
from inference_service.services.streaming import prime
from switchboard_common import problem_responses

router = APIRouter(prefix="/inference/models", tags=["inference"])


@router.get("", summary="Models on the healthy backends", responses=problem_responses(401, 503))
async def list_models(_: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    return {"models": await ModelCatalog(pool).models()}


@router.get("/loaded", summary="Models loaded in memory now", responses=problem_responses(401, 503))
async def loaded_models(_: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    return {"models": await ModelCatalog(pool).loaded()}


@router.post(
    "/pull",
    summary="Pull a model (SSE progress events; admin)",
    responses=problem_responses(401, 403, 404, 503),
)
async def pull_model(
    body: PullRequest,
    _: AdminUser,
    pool: PoolDep,
    backend: Annotated[
        str | None,
        Query(
            description="Base URL of the backend to pull onto (as in GET "
            "/inference/backends); default: the healthy backend that lacks the model and "
            "holds the fewest models."
        ),
    ] = None,
) -> StreamingResponse:
    progress = await prime(ModelCatalog(pool).pull(body.model, backend))

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for item in progress:
                yield sse("progress", item)
                if item.get("status") == "success":
                    yield sse("done", {"status": "success"})
        except Exception as exc:
            yield sse("error", error_problem(exc))

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/{name:path}",
    summary="Details of one model (404 names the available ones)",
    responses=problem_responses(401, 404, 503),
)
async def show_model(name: str, _: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    return await ModelCatalog(pool).show(name)


@router.delete(
    "/{name:path}",
    status_code=204,
    summary="Delete a model from every backend (admin)",
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_model(name: str, _: AdminUser, pool: PoolDep) -> Response:
    await ModelCatalog(pool).delete(name)
    return Response(status_code=204)
