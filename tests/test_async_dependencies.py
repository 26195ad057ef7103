"""Every route's endpoint and dependencies run on the event loop, none in the thread pool.

FastAPI runs a plain ``def`` endpoint or dependency (and a sync generator dependency) in
its thread pool: a hop to a worker thread and back, with the GIL handed over both ways, on
every request. On the gateway's settlement route that hop was most of its cost (2.95 →
1.35 ms of CPU per call once its two accessors became ``async def``; docs/architecture.md).
Dependencies here only read ``app.state`` or build small objects, so they are all
``async def``; work that must block is sent to a worker thread explicitly from inside an
async one (as the auth service's password hashing is).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts

from auth_service.main import create_app as auth_app
from gateway.main import create_app as gateway_app
from inference_service.main import create_app as inference_app
from knowledge_service.main import create_app as knowledge_app
from memory_service.main import create_app as memory_app

APPS: dict[str, Callable[[], Any]] = {
    "auth": auth_app,
    "gateway": gateway_app,
    "inference": inference_app,
    "knowledge": knowledge_app,
    "memory": memory_app,
}


def _on_the_loop(call: Callable[..., Any]) -> bool:
    for fn in (call, getattr(call, "__call__", None)):  # noqa: B004 (callable instances)
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return True
    return False


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def threadpool_calls(app: FastAPI) -> set[str]:
    """``path: module.name`` of every endpoint or dependency FastAPI would run in a thread."""
    found: set[str] = set()
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context.route, "dependant", None)
        if dependant is None:
            continue
        for call in _calls(dependant):
            if not _on_the_loop(call):
                name = getattr(call, "__qualname__", type(call).__qualname__)
                found.add(f"{context.path}: {getattr(call, '__module__', '?')}.{name}")
    return found


@pytest.mark.parametrize("service", sorted(APPS))
def test_no_route_runs_in_the_thread_pool(service: str) -> None:
    app = APPS[service]()
    api: FastAPI = getattr(app, "api", app)  # the gateway's FastAPI app sits behind its proxy
    routes = list(iter_route_contexts(api.routes))
    assert len(routes) > 3  # the walk really saw the service's routes
    assert threadpool_calls(api) == set()


def _sync_accessor() -> int:
    return 1


async def _async_accessor() -> int:
    return 2


def test_the_check_sees_a_sync_dependency() -> None:
    app = FastAPI()

    @app.get("/x")
    async def endpoint(a: int = Depends(_sync_accessor), b: int = Depends(_async_accessor)) -> int:
        return a + b

    @app.get("/y")
    def sync_endpoint() -> int:
        return 3

    found = threadpool_calls(app)
    assert found == {
        f"/x: {__name__}._sync_accessor",
        f"/y: {__name__}.test_the_check_sees_a_sync_dependency.<locals>.sync_endpoint",
    }
