"""Readiness checks: failures and timeouts are reported per dependency as a 503 problem."""

from __future__ import annotations

import asyncio

import httpx

from switchboard_common import ServiceSettings, create_service_app
from switchboard_common.health import ReadinessChecks


async def test_checks_report_ok_fail_and_timeout() -> None:
    checks = ReadinessChecks(timeout_s=0.1)

    async def ok() -> None:
        return None

    async def broken() -> None:
        raise ConnectionError("refused")

    async def stuck() -> None:
        await asyncio.sleep(5)

    checks.add("ok", ok)
    checks.add("broken", broken)
    checks.add("stuck", stuck)
    results = await checks.run()
    assert results["ok"].status == "ok"
    assert results["broken"].status == "fail" and "refused" in str(results["broken"].error)
    assert results["stuck"].status == "fail" and "0.1s" in str(results["stuck"].error)
    assert results["stuck"].latency_ms < 1000


async def test_ready_endpoint_is_503_problem_naming_the_dependency() -> None:
    app = create_service_app(ServiceSettings(service_name="unit"), title="unit")

    async def broken() -> None:
        raise ConnectionError("refused")

    app.state.readiness.add("database", broken)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as client:
        resp = await client.get("/ready")
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert "database" in body["detail"]
    assert body["checks"]["database"]["status"] == "fail"
