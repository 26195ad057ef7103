"""Ollama-compatible surface (``/api/*``): NDJSON streams, Ollama's JSON shapes.

Same auth and accounting as the native routes. Streaming is on by default (as in
Ollama); a failure mid-stream ends the stream with an ``{"error": "…"}`` line, as Ollama does.
Errors before the first chunk are problem+json with the right status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from inference_service.core.sse import error_problem, ndjson
from inference_service.dependencies import (
    AdminUser,
    HeaderPriority,
    InferenceDep,
    InferenceUser,
    PoolDep,
)
from inference_service.models.inference import ChatMessage, ModelOptions
from inference_service.services.admission import PriorityRequest
from inference_service.services.catalog import ModelCatalog
from inference_service.services.inference import Generation, Kind
from inference_service.services.requests import priority_of
from inference_service.services.response_cache_http import CacheControl, x_cache
from inference_service.services.streaming import prime
from switchboard_common import problem_responses

router = APIRouter(prefix="/api", tags=["ollama"])
ERRORS = problem_responses(401, 403, 404, 413, 422, 503)
NDJSON = "application/x-ndjson"


class OllamaBody(BaseModel):
    """Common fields; anything else is passed to Ollama unchanged."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    stream: bool = True
    options: ModelOptions | None = None
    priority: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data

    def upstream(self) -> dict[str, Any]:
        body = self.model_dump(exclude_none=True, exclude={"stream", "priority"})
        body.pop("name", None)
        return body


class OllamaChatBody(OllamaBody):
    messages: list[ChatMessage] = Field(min_length=1)


class OllamaGenerateBody(OllamaBody):
    prompt: str = Field(min_length=1)


async def _lines(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield ndjson(chunk)
    except Exception as exc:
        yield ndjson({"error": error_problem(exc).get("detail", "stream failed")})


async def _generate(
    kind: Kind,
    body: OllamaBody,
    user: str,
    service: InferenceDep,
    header: PriorityRequest,
    cache: CacheControl,
    response: Response,
) -> Any:
    gen = Generation(kind, body.upstream(), user, priority_of(body.priority, header), cache)
    if not body.stream:
        result = await service.complete(gen)
        response.headers.update(x_cache(gen))
        return result
    chunks = await prime(service.stream(gen))
    return StreamingResponse(_lines(chunks), media_type=NDJSON, headers=x_cache(gen))


@router.post("/chat", summary="Ollama chat (NDJSON stream by default)", responses=ERRORS)
async def chat(
    body: OllamaChatBody,
    principal: InferenceUser,
    service: InferenceDep,
    prio: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> Any:
    return await _generate("chat", body, principal.sub, service, prio, cache, response)


@router.post("/generate", summary="Ollama generate (NDJSON stream by default)", responses=ERRORS)
async def generate(
    body: OllamaGenerateBody,
    principal: InferenceUser,
    service: InferenceDep,
    prio: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> Any:
    return await _generate("generate", body, principal.sub, service, prio, cache, response)


@router.post("/embed", summary="Ollama embed", responses=ERRORS)
async def embed(
    body: OllamaBody, principal: InferenceUser, service: InferenceDep, prio: HeaderPriority
) -> dict[str, Any]:
    return await service.embed(principal.sub, body.upstream(), priority_of(body.priority, prio))


@router.get("/tags", summary="Ollama model list", responses=ERRORS)
async def tags(_: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    return {"models": await ModelCatalog(pool).models()}


@router.post("/show", summary="Ollama model details", responses=ERRORS)
async def show(body: OllamaBody, _: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    info = await ModelCatalog(pool).show(body.model)
    info.pop("name", None)
    info.pop("backend", None)
    return info


@router.get("/ps", summary="Ollama loaded models", responses=ERRORS)
async def ps(_: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    return {"models": await ModelCatalog(pool).loaded()}


@router.post("/pull", summary="Ollama pull (admin)", responses=ERRORS)
async def pull(body: OllamaBody, _: AdminUser, pool: PoolDep) -> Any:
    progress = await prime(ModelCatalog(pool).pull(body.model))
    if body.stream:
        return StreamingResponse(_lines(progress), media_type=NDJSON)
    last: dict[str, Any] = {}
    async for item in progress:
        last = item
    return {"status": last.get("status", "success")}


@router.delete("/delete", summary="Ollama delete (admin)", responses=ERRORS)
async def delete(body: OllamaBody, _: AdminUser, pool: PoolDep) -> Response:
    await ModelCatalog(pool).delete(body.model)
    return Response(status_code=200)


@router.get("/version", summary="Ollama version of a backend", responses=ERRORS)
async def version(_: InferenceUser, pool: PoolDep) -> dict[str, str]:
    backend = await pool.any_backend()
    async with pool.use(backend):
        return {"version": await backend.client.version()}
