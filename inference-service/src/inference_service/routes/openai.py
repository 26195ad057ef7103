"""OpenAI-compatible surface: ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``. Streams are SSE ``data: {…}`` chunks ending with
``data: [DONE]``; a failure mid-stream sends ``data: {"error": {…problem}}`` then ``[DONE]``.
Errors before the stream starts are problem+json."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from inference_service.core.sse import SSE_HEADERS, chunk_text, error_problem, sse
from inference_service.dependencies import HeaderPriority, InferenceDep, InferenceUser, PoolDep
from inference_service.models.openai import (
    OpenAIChatRequest,
    OpenAICompletionRequest,
    OpenAIEmbeddingRequest,
)
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.openai_wire import (
    CompletionIds,
    chat_to_generation,
    completion_to_generation,
    embedding_data,
    finish_reason,
)
from inference_service.services.requests import priority_of
from inference_service.services.response_cache_http import CacheControl, x_cache
from inference_service.services.streaming import prime
from switchboard_common import problem_responses

router = APIRouter(prefix="/v1", tags=["openai"])
ERRORS = problem_responses(401, 403, 404, 413, 422, 503)


async def _frames(
    chunks: AsyncIterator[dict[str, Any]], ids: CompletionIds, include_usage: bool
) -> AsyncIterator[bytes]:
    first = True
    try:
        async for chunk in chunks:
            text = chunk_text(chunk)
            if text or first:
                yield sse(None, ids.chunk(text, None, first=first))
                first = False
            if chunk.get("done"):
                yield sse(None, ids.chunk(None, finish_reason(chunk)))
                if include_usage:
                    yield sse(None, ids.usage_chunk(chunk))
    except Exception as exc:
        problem = error_problem(exc)
        yield sse(None, {"error": {**problem, "message": problem.get("detail", "")}})
    yield sse(None, "[DONE]")


async def _respond(
    service: InferenceService,
    gen: Generation,
    stream: bool,
    include_usage: bool,
    chat: bool,
    cache: CacheControl,
    response: Response,
) -> Any:
    ids = CompletionIds(gen.model, chat)
    gen.cache = cache
    if not stream:
        whole = ids.whole(await service.complete(gen))
        response.headers.update(x_cache(gen))
        return whole
    chunks = await prime(service.stream(gen))
    return StreamingResponse(
        _frames(chunks, ids, include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **x_cache(gen)},
    )


@router.post("/chat/completions", summary="OpenAI chat completions", responses=ERRORS)
async def chat_completions(
    body: OpenAIChatRequest,
    principal: InferenceUser,
    service: InferenceDep,
    prio: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> Any:
    gen = chat_to_generation(body, principal.sub, prio)
    include = bool(body.stream_options and body.stream_options.include_usage)
    return await _respond(service, gen, body.stream, include, True, cache, response)


@router.post("/completions", summary="OpenAI text completions", responses=ERRORS)
async def completions(
    body: OpenAICompletionRequest,
    principal: InferenceUser,
    service: InferenceDep,
    prio: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> Any:
    gen = completion_to_generation(body, principal.sub, prio)
    include = bool(body.stream_options and body.stream_options.include_usage)
    return await _respond(service, gen, body.stream, include, False, cache, response)


@router.post("/embeddings", summary="OpenAI embeddings", responses=ERRORS)
async def embeddings(
    body: OpenAIEmbeddingRequest,
    principal: InferenceUser,
    service: InferenceDep,
    prio: HeaderPriority,
) -> dict[str, Any]:
    upstream: dict[str, Any] = {"model": body.model, "input": body.input}
    if body.dimensions is not None:
        upstream["dimensions"] = body.dimensions
    result = await service.embed(principal.sub, upstream, priority_of(None, prio))
    tokens = int(result.get("prompt_eval_count") or 0)
    return {
        "object": "list",
        "model": body.model,
        "data": embedding_data(result.get("embeddings", []), body.encoding_format == "base64"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/models", summary="OpenAI model list", responses=problem_responses(401, 503))
async def list_models(_: InferenceUser, pool: PoolDep) -> dict[str, Any]:
    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": m["name"], "object": "model", "created": now, "owned_by": "ollama"}
            for m in await pool.merged_models()
        ],
    }
