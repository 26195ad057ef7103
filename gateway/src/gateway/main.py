"""Assembles the gateway: FastAPI for its own routes, a raw ASGI proxy for the services."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.config import Settings
from gateway.core.cache import CachePolicy, parse_cache_routes
from gateway.core.dispatch import GatewayApp
from gateway.core.limits import LimitPolicy
from gateway.core.priority import PriorityPolicy
from gateway.core.route_table import RouteTable
from gateway.core.security import Authenticator
from gateway.core.token_limits import TokenGate, TokenLimitPolicy
from gateway.routes import docs, fallback, health, usage_settlement, verify
from gateway.services.completion_cache import CompletionCache
from gateway.services.http_proxy import HttpProxy
from gateway.services.openapi_merge import OpenApiAggregator
from gateway.services.rate_limit import RateLimiter
from gateway.services.response_cache import ResponseCache
from gateway.services.token_budget import TokenBudget
from gateway.services.upstreams import UpstreamPool
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common import create_redis, create_service_app
from switchboard_common.lean_redis import LeanRedis


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or Settings()
    upstreams = UpstreamPool(settings)
    # Redis clients connect lazily; creating them here lets the app be assembled up front.
    # Hot-path clients are not traced: their commands run outside the proxy span, so each
    # would be a root trace of its own, at ~200 µs of CPU (docs/observability.md).
    revocation_redis = create_redis(
        settings.revocation_redis,
        max_connections=16,
        timeout_s=settings.redis_timeout_s,
        traced=False,
    )
    revocation_listener = create_redis(
        settings.revocation_redis, max_connections=2, blocking_reads=True
    )
    auth = Authenticator(settings, upstreams, revocation_redis, revocation_listener)
    limits_redis = create_redis(
        settings.redis_url,
        max_connections=64,
        timeout_s=max(0.5, settings.rate_limit_timeout_s),
        traced=False,
    )
    # the per-request Lua calls (rate-limit leases, token reservations) go over the lean
    # client: redis-py's own cost per call was ~3x the round trip (switchboard_common.lean_redis)
    lean_redis = (
        LeanRedis(settings.redis_url, timeout_s=max(0.5, settings.rate_limit_timeout_s))
        if LeanRedis.supports(settings.redis_url)
        else None
    )
    limiter = RateLimiter(
        limits_redis,
        timeout_s=settings.rate_limit_timeout_s,
        lease_max=settings.rate_limit_lease_max,
        lean=lean_redis,
    )
    # GET response cache (docs/caching.md): its own pool, so cache traffic never queues
    # rate-limit checks
    cache_redis = create_redis(
        settings.redis_url,
        max_connections=64,
        timeout_s=max(0.5, settings.cache_timeout_s),
        traced=False,
    )
    cache = (
        ResponseCache(
            cache_redis,
            CachePolicy(parse_cache_routes(settings.cache_routes)),
            max_bytes=settings.cache_max_bytes,
            timeout_s=settings.cache_timeout_s,
        )
        if settings.cache_enabled
        else None
    )
    # deterministic completions (L1 before the inference service's cache): they live and die
    # with the `models` group of the cache above, so they need it
    completions = (
        CompletionCache(
            cache,
            ttl_s=settings.completion_cache_ttl_s,
            max_bytes=settings.completion_cache_max_bytes,
        )
        if cache is not None and settings.completion_cache_enabled
        else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upstreams.start()
        await auth.start()
        proxy.start()
        try:
            yield
        finally:
            await proxy.close()  # flushes the proxy spans still queued
            await auth.close()
            await upstreams.close()
            await revocation_listener.aclose()
            await revocation_redis.aclose()
            await limits_redis.aclose()
            if lean_redis is not None:
                lean_redis.close()
            await cache_redis.aclose()

    api = create_service_app(
        settings,
        title="Switchboard gateway",
        description="One URL in front of the auth, inference, knowledge and memory services.",
        routers=[
            health.router,
            verify.router,
            docs.router,
            fallback.router,
        ],
        lifespan=lifespan,
        liveness_route=False,
        docs_routes=False,
    )
    api.state.upstreams = upstreams
    # built after the app: its span exporter reuses the tracer provider's resource
    proxy = HttpProxy(upstreams, settings)
    api.state.openapi = OpenApiAggregator(
        upstreams, api.openapi, ttl_s=settings.openapi_ttl_s, timeout_s=settings.health_timeout_s
    )
    api.state.auth = auth
    # token budgets share the request limiter's Redis client (docs/rate-limits.md)
    token_budget = TokenBudget(
        limits_redis,
        settings.internal_secret.get_secret_value().encode(),
        timeout_s=settings.rate_limit_timeout_s,
        lean=lean_redis,
    )
    api.state.token_budget = token_budget
    gateway = GatewayApp(
        api,
        RouteTable(),
        auth,
        LimitPolicy(settings),
        limiter,
        proxy,
        WebSocketProxy(
            upstreams,
            max_message_bytes=settings.ws_message_limit,
            idle_timeout_s=settings.ws_idle_timeout_s,
            max_per_principal=settings.ws_max_per_principal,
        ),
        TokenGate(TokenLimitPolicy(settings), token_budget),
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        body_timeout_s=settings.client_body_timeout_s,
        priorities=PriorityPolicy.from_settings(settings),
        cache=cache,
        completions=completions,
        speculative=settings.speculative_admission,
        settlement=usage_settlement.UsageSettlementEndpoint(api),
    )
    api.state.gateway = gateway  # /gateway/verify runs the same checks as the proxy
    return gateway
