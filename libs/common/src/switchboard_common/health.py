"""``/health`` (liveness) and ``/ready`` (dependencies reachable) for every service.

Liveness answers 200 as long as the process serves HTTP. Readiness runs every registered
check concurrently, each bounded by a timeout, and answers 200 when all pass or a 503
problem listing which dependency failed and why::

    readiness = app.state.readiness          # a ReadinessChecks, created by create_service_app
    readiness.add("redis", redis_ping(client))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from switchboard_common.exception_handlers import problem_response
from switchboard_common.problems import problem_responses

ReadinessCheck = Callable[[], Awaitable[object]]


class HealthStatus(BaseModel):
    status: str
    service: str
    version: str


class CheckResult(BaseModel):
    status: str
    latency_ms: float
    error: str | None = None


class ReadyStatus(BaseModel):
    status: str
    service: str
    checks: dict[str, CheckResult]


class ReadinessChecks:
    """Named async callables that raise (or time out) when a dependency is not usable."""

    def __init__(self, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def run(self) -> dict[str, CheckResult]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run_one(self._checks[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _run_one(self, check: ReadinessCheck) -> CheckResult:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
        except TimeoutError:
            error: str | None = f"no answer within {self.timeout_s:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            error = None
        latency = round((time.perf_counter() - start) * 1000, 2)
        return CheckResult(
            status="ok" if error is None else "fail", latency_ms=latency, error=error
        )


def health_router(service: str, version: str, *, liveness: bool = True) -> APIRouter:
    """``/ready`` always; ``/health`` unless the service provides its own (the gateway does)."""
    router = APIRouter(tags=["health"])

    if liveness:

        @router.get("/health", response_model=HealthStatus, summary="Liveness")
        async def health() -> HealthStatus:
            return HealthStatus(status="ok", service=service, version=version)

    @router.get(
        "/ready",
        response_model=ReadyStatus,
        summary="Readiness: every dependency reachable",
        responses=problem_responses(503),
    )
    async def ready(request: Request) -> Response:
        checks: ReadinessChecks = request.app.state.readiness
        results = await checks.run()
        body: dict[str, Any] = {name: r.model_dump() for name, r in results.items()}
        failed = [name for name, r in results.items() if r.status != "ok"]
        if failed:
            return problem_response(
                503,
                detail=f"{service} is not ready: {', '.join(failed)} unavailable.",
                instance="/ready",
                headers={"Retry-After": "1"},
                extensions={"service": service, "checks": body},
            )
        return JSONResponse({"status": "ready", "service": service, "checks": body})

    return router
