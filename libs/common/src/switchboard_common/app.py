"""``create_service_app``: the one way a Switchboard service builds its FastAPI app.

It wires what every service must have, so a service's ``main.py`` only assembles:
problem+json exception handlers, request ids, body size limit, telemetry (traces, JSON
logs, ``/metrics``), ``/health`` and ``/ready``, and OpenAPI that documents problem+json.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from switchboard_common.body_limit import BodySizeLimitMiddleware
from switchboard_common.exception_handlers import install_exception_handlers
from switchboard_common.health import ReadinessChecks, health_router
from switchboard_common.openapi import use_problem_schemas
from switchboard_common.request_context import RequestContextMiddleware
from switchboard_common.settings import ServiceSettings
from switchboard_common.telemetry import setup_telemetry

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    lifespan: Lifespan | None = None,
    openapi_tags: list[dict[str, Any]] | None = None,
    liveness_route: bool = True,
    docs_routes: bool = True,
    self_traced_paths: Sequence[str] = (),
) -> FastAPI:
    """Build a service app.

    ``liveness_route=False`` when the service serves its own ``/health``;
    ``docs_routes=False`` when it serves its own ``/openapi.json`` and ``/docs`` (the gateway
    serves the merged document); ``app.openapi()`` still describes the app itself.
    ``self_traced_paths``: paths the OpenTelemetry instrumentation leaves alone because the
    service traces them itself (:func:`switchboard_common.server_span.server_span`).
    """

    @asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        if lifespan is None:
            _freeze_startup_objects()
            yield
            return
        async with lifespan(app):
            _freeze_startup_objects()
            yield

    app = FastAPI(
        title=title,
        description=description,
        version=settings.version,
        lifespan=_lifespan,
        openapi_tags=openapi_tags,
        openapi_url="/openapi.json" if docs_routes else None,
        docs_url="/docs" if docs_routes else None,
        redoc_url="/redoc" if docs_routes else None,
    )
    app.state.settings = settings
    app.state.readiness = ReadinessChecks(timeout_s=settings.ready_check_timeout_s)
    install_exception_handlers(app)
    app.include_router(
        health_router(settings.service_name, settings.version, liveness=liveness_route)
    )
    # before the routers: /metrics must precede any catch-all
    setup_telemetry(app, settings, self_traced_paths)
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    use_problem_schemas(app)
    return app


_freeze = {"after_startup": False}


def freeze_after_startup() -> None:
    """Have apps freeze their startup objects (:func:`_freeze_startup_objects`); called by
    :func:`switchboard_common.server.serve`, so only a server process does it, never a test
    process that builds apps by the dozen."""
    _freeze["after_startup"] = True


def _freeze_startup_objects() -> None:
    """Move everything alive after startup (modules, the app, its routes and models) out
    of the cyclic garbage collector's reach: they live as long as the process, and every
    full collection would otherwise walk them again, in the middle of some request."""
    if _freeze["after_startup"]:
        gc.collect()
        gc.freeze()


def wrap_middleware_stack(app: FastAPI, layer: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``layer`` outside the app's whole middleware stack — outside Starlette's error
    middleware and the OpenTelemetry middleware too — built when the stack is (on the
    first request or lifespan event, once every middleware was added). For a hot path that
    must skip layers it has no use for (:func:`user_middleware_around`)."""
    build = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        return layer(build())

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]


def user_middleware_around(app: FastAPI, inner: ASGIApp) -> ASGIApp:
    """``inner`` wrapped in the app's user middleware (``add_middleware``: request ids, body
    limit, metrics …), the same classes in the same order as in the app's own stack, but
    without Starlette's error middlewares, the tracing middleware and the router."""
    for cls, args, kwargs in reversed(app.user_middleware):
        inner = cls(inner, *args, **kwargs)
    return inner
