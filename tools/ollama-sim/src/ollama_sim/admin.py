"""Admin routes (``/_sim/*``, not part of Ollama) and the per-path request counter."""

from __future__ import annotations

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .state import SimState
from .wire import ApiError, json_response


def _state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


async def sim_get_config(request: Request) -> Response:
    return json_response(_state(request).config.model_dump())


async def sim_set_config(request: Request) -> Response:
    state = _state(request)
    try:
        patch = await request.json()
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(patch, dict):
        raise ApiError(400, "invalid request: body must be a JSON object")
    try:
        new = state.config.patched(patch)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"invalid config: {where}: {first['msg']}") from None
    state.set_config(new)
    return json_response(new.model_dump())


async def sim_reset(request: Request) -> Response:
    state = _state(request)
    state.reset()
    return json_response({"status": "reset", "config": state.config.model_dump()})


async def sim_stats(request: Request) -> Response:
    return json_response(_state(request).snapshot())


class RequestCounter:
    """Counts requests per path for ``/_sim/stats`` (admin paths excluded)."""

    def __init__(self, app: ASGIApp, state: SimState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/_sim"):
            self.state.stats.requests[scope["path"]] += 1
        await self.app(scope, receive, send)


def admin_routes() -> list[Route]:
    return [
        Route("/_sim/config", sim_get_config, methods=["GET"]),
        Route("/_sim/config", sim_set_config, methods=["POST"]),
        Route("/_sim/reset", sim_reset, methods=["POST"]),
        Route("/_sim/stats", sim_stats, methods=["GET"]),
    ]
