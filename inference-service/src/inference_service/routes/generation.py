"""Native generation: ``/inference/chat``, ``/generate``, ``/embed``, ``/tokens/count``,
``/usage``. Streaming answers are SSE: ``queued``, ``token``, ``usage``, ``done``, ``error``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from inference_service.core.sse import SSE_HEADERS, chunk_text, native_events, sse_stream, usage_of
from inference_service.dependencies import (
    AdmissionDep,
    HeaderPriority,
    InferenceDep,
    InferenceUser,
    LedgerDep,
    PoolDep,
)
from inference_service.models.inference import (
    AssistantMessage,
    ChatRequest,
    CompletionResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    TokenCountRequest,
    TokenCountResponse,
    Usage,
    UsageReport,
)
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.requests import (
    chat_generation,
    generate_generation,
    priority_of,
)
from inference_service.services.response_cache_http import CacheControl, x_cache
from inference_service.services.streaming import prime, with_positions
from inference_service.services.tokens import count_tokens
from switchboard_common import problem_responses

router = APIRouter(prefix="/inference", tags=["inference"])
ERRORS = problem_responses(401, 403, 404, 413, 422, 503)


async def answer(
    service: InferenceService,
    gen: Generation,
    stream: bool,
    cache: CacheControl,
    response: Response,
) -> CompletionResponse | StreamingResponse:
    """JSON answer, or an SSE stream whose first event was already produced."""
    gen.cache = cache
    if stream:
        # primed before native_events turns errors into events: one before any output
        # (unknown model, backend down, queue full) is a status code, not a 200 stream
        items = await prime(with_positions(lambda cb: service.stream(gen, cb)))
        events = native_events(items)
        return StreamingResponse(
            sse_stream(events),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **x_cache(gen)},
        )
    result = await service.complete(gen)
    response.headers.update(x_cache(gen))
    return CompletionResponse(
        model=str(result.get("model") or gen.model),
        message=AssistantMessage(content=chunk_text(result)),
        usage=Usage(**usage_of(result)),
        done_reason=result.get("done_reason"),
    )


@router.post(
    "/chat",
    response_model=CompletionResponse,
    summary="Chat (stream: true → SSE token/usage/done/error events)",
    responses=ERRORS,
)
async def chat(
    body: ChatRequest,
    principal: InferenceUser,
    service: InferenceDep,
    priority: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> CompletionResponse | StreamingResponse:
    gen = chat_generation(body, principal.sub, priority)
    return await answer(service, gen, body.stream, cache, response)


@router.post(
    "/generate",
    response_model=CompletionResponse,
    summary="Complete a prompt (stream: true → SSE)",
    responses=ERRORS,
)
async def generate(
    body: GenerateRequest,
    principal: InferenceUser,
    service: InferenceDep,
    priority: HeaderPriority,
    cache: CacheControl,
    response: Response,
) -> CompletionResponse | StreamingResponse:
    gen = generate_generation(body, principal.sub, priority)
    return await answer(service, gen, body.stream, cache, response)


@router.post("/embed", response_model=EmbedResponse, summary="Embed texts", responses=ERRORS)
async def embed(
    body: EmbedRequest, principal: InferenceUser, service: InferenceDep, priority: HeaderPriority
) -> EmbedResponse:
    upstream = body.model_dump(exclude_none=True, exclude={"priority"})
    result = await service.embed(principal.sub, upstream, priority_of(body.priority, priority))
    return EmbedResponse(
        model=body.model,
        embeddings=result.get("embeddings", []),
        usage=Usage(prompt_tokens=int(result.get("prompt_eval_count") or 0), completion_tokens=0),
    )


@router.post(
    "/tokens/count",
    response_model=TokenCountResponse,
    summary="Count tokens (exact from the backend when it can tell)",
    responses=ERRORS,
)
async def tokens_count(
    body: TokenCountRequest,
    _: InferenceUser,
    pool: PoolDep,
    admission: AdmissionDep,
    priority: HeaderPriority,
) -> TokenCountResponse:
    messages = None if body.messages is None else [m.model_dump() for m in body.messages]
    tokens, exact, method = await count_tokens(
        pool, admission, body.model, body.text, messages, priority_of(None, priority)
    )
    return TokenCountResponse(model=body.model, tokens=tokens, exact=exact, method=method)


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="My token usage per model per day (UTC)",
    responses=problem_responses(401, 403),
)
async def usage(
    principal: InferenceUser,
    ledger: LedgerDep,
    days: Annotated[int, Query(ge=1, le=90)] = 7,
) -> dict[str, Any]:
    return await ledger.report(principal.sub, days)
