"""Starlette application: the Ollama routes plus the ``/_sim/*`` admin routes."""

from __future__ import annotations

from time import perf_counter
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .admin import RequestCounter, admin_routes
from .config import FailMode, SimConfig
from .embeddings import embed_text, shorten, truncate_tokens
from .faults import HangResponse, RefuseResponse, take_fault
from .generation import EmbedResponse, GenerationResponse, GenJob, LoadResponse
from .models import ModelSpec, synthesize_model
from .pull import MISSING_MARKER, MISSING_MESSAGE, stream_progress
from .residency import parse_keep_alive
from .state import SimState
from .tokens import count_tokens, generation_key, plan_output, token_ids, tokenize
from .wire import (
    ApiError,
    ChatRequest,
    CopyRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    ModelRequest,
    Options,
    error_response,
    json_response,
    model_not_found,
    parse_body,
)

VERSION = "0.12.0-sim"


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


def _lookup(state: SimState, name: str) -> ModelSpec:
    spec = state.catalogue.get(name)
    if spec is None:
        raise model_not_found(name)
    return spec


def _keep_alive(value: float | str | None) -> float:
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _early_fault(state: SimState) -> tuple[FailMode | None, Response | None]:
    """Draw an injected fault; returns (fault, response to send instead of the real one)."""
    fault = take_fault(state.config)
    if fault is None:
        return None, None
    state.stats.failed += 1
    if fault == "refuse":
        return fault, RefuseResponse()
    if fault == "error_500":
        return fault, error_response(500, "simulated internal error")
    if fault == "hang":
        return fault, HangResponse(state.stats)
    return fault, None  # error_after_tokens: handled while producing


def _capped(count: int, options: Options, spec: ModelSpec) -> int:
    return min(count, options.num_ctx or spec.context_length)


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return json_response({"version": VERSION})


async def tags(request: Request) -> Response:
    return json_response({"models": [m.tag_entry() for m in _state(request).catalogue.all()]})


async def ps(request: Request) -> Response:
    return json_response({"models": _state(request).residency.ps()})


async def generate(request: Request) -> Response:
    started = perf_counter()
    state = _state(request)
    body = await parse_body(request, GenerateRequest)
    spec = _lookup(state, body.model)
    if spec.is_embedding_only:
        raise ApiError(400, f'"{body.model}" does not support generate')
    keep = _keep_alive(body.keep_alive)
    fault, early = _early_fault(state)
    if early is not None:
        return early
    prompt = body.prompt or ""
    if not prompt and not body.images:
        return LoadResponse(state, started, spec, keep, fault, "generate", body.model)
    options = body.options or Options()
    system, suffix, ctx_in = body.system or "", body.suffix or "", body.context or []
    key = generation_key(spec.name, [system, prompt, suffix, repr(ctx_in)], options.seed)
    pieces, reason = plan_output(
        key,
        body.format or None,
        options.num_predict,
        state.config.default_num_predict,
        options.stop or [],
    )
    prompt_tokens = tokenize(system) + tokenize(prompt) + tokenize(suffix)
    job = GenJob(
        kind="generate",
        model=body.model,
        pieces=pieces,
        done_reason=reason,
        prompt_eval_count=_capped(len(prompt_tokens) + len(ctx_in), options, spec),
        context=None if body.raw else ctx_in + token_ids(prompt_tokens),
        stream=body.stream,
    )
    return GenerationResponse(state, started, spec, keep, fault, job)


async def chat(request: Request) -> Response:
    started = perf_counter()
    state = _state(request)
    body = await parse_body(request, ChatRequest)
    spec = _lookup(state, body.model)
    if spec.is_embedding_only:
        raise ApiError(400, f'"{body.model}" does not support chat')
    keep = _keep_alive(body.keep_alive)
    fault, early = _early_fault(state)
    if early is not None:
        return early
    messages = body.messages or []
    if not messages:
        return LoadResponse(state, started, spec, keep, fault, "chat", body.model)
    options = body.options or Options()
    parts = [f"{m.role}\x1f{m.content or ''}" for m in messages]
    key = generation_key(spec.name, parts, options.seed)
    pieces, reason = plan_output(
        key,
        body.format or None,
        options.num_predict,
        state.config.default_num_predict,
        options.stop or [],
    )
    job = GenJob(
        kind="chat",
        model=body.model,
        pieces=pieces,
        done_reason=reason,
        prompt_eval_count=_capped(sum(count_tokens(m.content) for m in messages), options, spec),
        context=None,
        stream=body.stream,
    )
    return GenerationResponse(state, started, spec, keep, fault, job)


async def embed(request: Request) -> Response:
    started = perf_counter()
    state = _state(request)
    body = await parse_body(request, EmbedRequest)
    spec = _lookup(state, body.model)
    keep = _keep_alive(body.keep_alive)
    options = body.options or Options()
    limit = options.num_ctx or spec.context_length
    dims = body.dimensions
    if dims is not None and not 0 < dims <= spec.embedding_length:
        raise ApiError(400, f"dimensions must be between 1 and {spec.embedding_length}")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    counts = [count_tokens(t) for t in texts]
    if not body.truncate and any(c > limit for c in counts):
        raise ApiError(400, "input exceeds maximum context length")
    fault, early = _early_fault(state)
    if early is not None:
        return early
    vectors = []
    for text, count in zip(texts, counts, strict=True):
        vec = embed_text(
            truncate_tokens(text, limit) if count > limit else text, spec.embedding_length
        )
        vectors.append(shorten(vec, dims) if dims else vec)
    out: dict[str, Any] = {
        "model": body.model,
        "embeddings": vectors,
        "prompt_eval_count": sum(min(c, limit) for c in counts),
    }
    return EmbedResponse(state, started, spec, keep, fault, out, with_durations=True)


async def embeddings_legacy(request: Request) -> Response:
    started = perf_counter()
    state = _state(request)
    body = await parse_body(request, EmbeddingsRequest)
    spec = _lookup(state, body.model)
    keep = _keep_alive(body.keep_alive)
    fault, early = _early_fault(state)
    if early is not None:
        return early
    limit = (body.options or Options()).num_ctx or spec.context_length
    vec = embed_text(truncate_tokens(body.prompt, limit), spec.embedding_length)
    out = {"embedding": vec if body.prompt else []}
    return EmbedResponse(state, started, spec, keep, fault, out, with_durations=False)


async def show(request: Request) -> Response:
    state = _state(request)
    body = await parse_body(request, ModelRequest)
    spec = _lookup(state, body.model)
    return json_response(state.catalogue.show(spec, body.verbose))


async def pull(request: Request) -> Response:
    state = _state(request)
    body = await parse_body(request, ModelRequest)
    missing = MISSING_MARKER in body.model
    spec = None if missing else state.catalogue.get(body.model) or synthesize_model(body.model)
    if not body.stream:
        if spec is None:
            return error_response(500, MISSING_MESSAGE)
        state.catalogue.add(spec)
        return json_response({"status": "success"})

    def install() -> None:
        if spec is not None:
            state.catalogue.add(spec)

    lines = stream_progress(spec, lambda: state.config.pull_delay_ms / 1000, install)
    return StreamingResponse(lines, media_type="application/x-ndjson")


async def delete(request: Request) -> Response:
    state = _state(request)
    body = await parse_body(request, ModelRequest)
    spec = state.catalogue.get(body.model)
    if spec is None or not state.catalogue.delete(body.model):
        raise model_not_found(body.model)
    state.residency.unload(spec.name)
    return Response(status_code=200)


async def copy(request: Request) -> Response:
    state = _state(request)
    body = await parse_body(request, CopyRequest)
    if not state.catalogue.copy(body.source, body.destination):
        raise model_not_found(body.source)
    return Response(status_code=200)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    text = {404: "404 page not found", 405: "405 method not allowed"}.get(exc.status_code)
    return PlainTextResponse(text or str(exc.detail), status_code=exc.status_code)


def create_app(config: SimConfig | None = None) -> Starlette:
    """Build a fresh simulator app (its state lives on ``app.state.sim``)."""
    state = SimState(config)
    routes = [
        Route("/", root, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings_legacy, methods=["POST"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/api/delete", delete, methods=["DELETE"]),
        Route("/api/copy", copy, methods=["POST"]),
        *admin_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestCounter, state=state)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.state.sim = state
    return app
