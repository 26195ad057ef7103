"""Assembles the inference service app. Logic lives in routes/, services/ and core/."""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from inference_service.config import Settings
from inference_service.core.fast_stream import PATHS as FAST_PATHS
from inference_service.core.fast_stream import FastStreamPath
from inference_service.dependencies import inference_for
from inference_service.routes import code, generation, models, ollama_api, openai, queue, status, ws
from inference_service.services.backends import Backend, BackendPool, CircuitBreaker
from inference_service.services.json_completion import JsonCompleter
from inference_service.services.ollama import OllamaClient, RetryPolicy
from inference_service.services.queue import RedisAdmissionQueue
from inference_service.services.queue_models import QueueSettings
from inference_service.services.token_settlement import (
    SettlementReporter,
    TokenReservationMiddleware,
)
from inference_service.services.usage import UsageLedger
from switchboard_common import HttpTimeouts, create_http_client, create_service_app, managed_redis
from switchboard_common.app import wrap_middleware_stack
from switchboard_common.lean_redis import LeanRedis


def build_pool(settings: Settings, stack: AsyncExitStack) -> BackendPool:
    """One ``OllamaClient`` (own ``httpx.AsyncClient``) per URL, closed with ``stack``."""
    timeouts = HttpTimeouts(
        connect_s=settings.ollama_connect_timeout_s, read_s=settings.ollama_read_timeout_s
    )
    retry = RetryPolicy(
        retries=settings.ollama_retries,
        base_s=settings.ollama_backoff_base_s,
        max_s=settings.ollama_backoff_max_s,
        jitter_s=settings.ollama_backoff_jitter_s,
    )
    backends = []
    for url in (u.strip().rstrip("/") for u in settings.ollama_urls.split(",")):
        if not url:
            continue
        http = create_http_client(url, timeouts=timeouts)
        stack.push_async_callback(http.aclose)
        breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        client = OllamaClient(http, retry)
        stack.callback(client.close)
        backends.append(Backend(client, breaker))
    return BackendPool(backends, settings.model_refresh_interval_s)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(managed_redis(app, settings))
        app.state.backend_pool = build_pool(settings, stack)
        # Every generation passes the Redis admission queue: slots per backend+model shared
        # by all replicas, priorities with aging (docs/queue.md).
        # the queue's Lua calls go over the lean client (one is before every first token)
        lean = None
        if LeanRedis.supports(settings.redis_url):
            lean = LeanRedis(settings.redis_url, timeout_s=settings.redis_timeout_s)
            stack.callback(lean.close)
        app.state.usage_ledger = UsageLedger(redis, settings.usage_retention_days, lean=lean)
        admission = RedisAdmissionQueue(redis, QueueSettings(), lean=lean)
        await admission.start()
        stack.push_async_callback(admission.aclose)
        app.state.admission = admission
        app.state.review_backend = JsonCompleter(lambda: inference_for(app))
        stack.push_async_callback(app.state.token_reporter.aclose)
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app(
        settings,
        title="Switchboard inference",
        description="Ollama-backed chat, generation and embeddings with a fair admission queue.",
        routers=[
            status.router,
            models.router,
            queue.router,
            code.router,
            generation.router,
            ws.router,
            openai.router,
            ollama_api.router,
        ],
        lifespan=lifespan,
        self_traced_paths=list(FAST_PATHS),  # FastStreamPath opens their server spans
    )
    # usage of generations the gateway reserved tokens for goes back to it (token budgets)
    reporter = SettlementReporter(settings.gateway_url, settings.internal_secret)
    app.state.token_reporter = reporter
    app.add_middleware(TokenReservationMiddleware, reporter=reporter)
    # streamed native chat/generate bypass FastAPI's routing and the layers they have no use
    # for (the time-to-first-token path); the user middleware above still wraps them
    wrap_middleware_stack(app, lambda stack: FastStreamPath(stack, app))
    return app
