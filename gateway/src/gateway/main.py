"""Assembles the gateway: FastAPI for its own routes, a raw ASGI proxy for the services."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.config import Settings
from gateway.core.dispatch import GatewayApp
from gateway.core.route_table import RouteTable
from gateway.routes import fallback, health
from gateway.services.http_proxy import HttpProxy
from gateway.services.upstreams import UpstreamPool
from gateway.services.ws_proxy import WebSocketProxy
from switchboard_common import create_service_app


def create_app(settings: Settings | None = None) -> GatewayApp:
    settings = settings or Settings()
    upstreams = UpstreamPool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upstreams.start()
        try:
            yield
        finally:
            await upstreams.close()

    api = create_service_app(
        settings,
        title="Switchboard gateway",
        description="One URL in front of the auth, inference, knowledge and memory services.",
        routers=[health.router, fallback.router],
        lifespan=lifespan,
        liveness_route=False,
    )
    api.state.upstreams = upstreams
    return GatewayApp(
        api,
        RouteTable(),
        HttpProxy(upstreams, settings),
        WebSocketProxy(upstreams, max_message_bytes=settings.max_body_bytes),
    )
