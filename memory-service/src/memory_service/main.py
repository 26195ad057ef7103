"""Assembles the memory service app. Logic lives in routes/, services/ and core/."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from memory_service.config import Settings
from memory_service.routes import status
from switchboard_common import create_service_app, managed_redis


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with managed_redis(app, app.state.settings):
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="Switchboard memory",
        description="Short-term conversation memory and long-term facts.",
        routers=[status.router],
        lifespan=lifespan,
    )
