"""POST /code/analyze through a real service app (auth, limits, problem+json, shape)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from inference_service.config import Settings
from inference_service.routes.code import router
from inference_service.services.code_analysis import NO_BACKEND_ERROR
from switchboard_common import ServiceSettings, create_service_app
from switchboard_common.identity import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    Principal,
    sign_identity,
)

REVIEW = {
    "summary": "Returns its argument.",
    "findings": [{"line": 1, "severity": "info", "message": "no type hints"}],
    "suggestions": ["add a docstring"],
}


class FakeReviewBackend:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.models: list[str] = []

    async def complete_json(
        self, model: str, system: str, prompt: str, schema: dict[str, Any]
    ) -> str:
        self.models.append(model)
        return self.answer


def build_app(settings: ServiceSettings | None = None, backend: Any = None) -> FastAPI:
    app = create_service_app(settings or Settings(), title="t", routers=[router])
    if backend is not None:
        app.state.review_backend = backend
    return app


def identity_headers(*scopes: str) -> dict[str, str]:
    principal = Principal(sub="1", username="u", scope=list(scopes))
    value, signature = sign_identity(principal, ServiceSettings().internal_secret)
    return {IDENTITY_HEADER: value, SIGNATURE_HEADER: signature}


@pytest.fixture
def backend() -> FakeReviewBackend:
    return FakeReviewBackend(json.dumps(REVIEW))


@pytest.fixture
async def client(backend: FakeReviewBackend) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(backend=backend))
    async with httpx.AsyncClient(transport=transport, base_url="http://inference") as http:
        yield http


async def analyze(http: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", identity_headers("inference"))
    return await http.post("/code/analyze", json=body, headers=headers, **kw)


async def test_without_identity_is_401(client: httpx.AsyncClient) -> None:
    response = await analyze(client, {"code": "x = 1\n"}, headers={})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_without_the_inference_scope_is_403(client: httpx.AsyncClient) -> None:
    response = await analyze(client, {"code": "x"}, headers=identity_headers("knowledge"))
    assert response.status_code == 403


async def test_oversized_code_is_a_413_problem(client: httpx.AsyncClient) -> None:
    response = await analyze(client, {"code": "#" * (200 * 1024 + 1)})
    assert response.status_code == 413
    problem = response.json()
    assert problem["type"] == "urn:switchboard:problem:payload-too-large"
    assert problem["limit_bytes"] == 200 * 1024
    at_limit = await analyze(client, {"code": "#" * (200 * 1024), "review": False})
    assert at_limit.status_code == 200


async def test_limit_comes_from_inference_code_max_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_CODE_MAX_BYTES", "64")
    app = build_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        response = await analyze(c, {"code": "x" * 65})
    assert response.status_code == 413
    assert response.json()["limit_bytes"] == 64


@pytest.mark.parametrize(
    "body",
    [
        {"code": ""},
        {"code": "  \n\t"},
        {},
        {"code": "x", "language": "cobol"},
        {"code": "x", "x": 1},
    ],
    ids=["empty", "whitespace", "missing", "unknown-language", "unknown-field"],
)
async def test_bad_bodies_are_422_problems(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await analyze(client, body)
    assert response.status_code == 422
    assert response.json()["type"] == "urn:switchboard:problem:validation-error"


async def test_python_analysis_with_review(
    client: httpx.AsyncClient, backend: FakeReviewBackend
) -> None:
    response = await analyze(client, {"code": "def f(x):\n    return x\n"})
    assert response.status_code == 200
    result = response.json()
    assert result["language"] == "python"
    assert result["model"] == "qwen2.5-coder:1.5b" == backend.models[0]
    assert result["review"] == REVIEW
    assert result["review_error"] is None
    static = result["static"]
    assert static["analyzer"] == "python-ast"
    assert static["lines"] == {"total": 2, "code": 2, "comment": 0, "blank": 0, "longest": 12}
    [function] = static["functions"]
    assert (function["name"], function["lineno"], function["end_lineno"]) == ("f", 1, 2)
    assert function["complexity"] == 1


async def test_other_language_and_syntax_error_shapes(client: httpx.AsyncClient) -> None:
    go = await analyze(client, {"code": "func main() {\n}\n", "filename": "m.go", "review": False})
    assert go.status_code == 200
    assert go.json()["language"] == "go"
    assert go.json()["static"]["analyzer"] == "line-metrics"
    assert go.json()["static"]["function_count_estimate"] == 1
    assert go.json()["review"] is None
    assert go.json()["model"] is None
    broken = await analyze(client, {"code": "def f(:\n", "language": "py", "review": False})
    assert broken.status_code == 200
    assert broken.json()["static"]["syntax_error"]["line"] == 1


async def test_invalid_model_output_is_not_a_500() -> None:
    app = build_app(backend=FakeReviewBackend("{not json"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        response = await analyze(c, {"code": "x = 1\n"})
    assert response.status_code == 200
    assert response.json()["review"] is None
    assert "after one retry" in response.json()["review_error"]


async def test_missing_backend_is_reported_not_raised() -> None:
    app = build_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i") as c:
        response = await analyze(c, {"code": "x = 1\n"})
    assert response.status_code == 200
    assert (response.json()["review"], response.json()["review_error"]) == (None, NO_BACKEND_ERROR)


async def test_openapi_declares_scope_and_problems(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/code/analyze"]["post"]
    assert {"401", "403", "413", "422"} <= set(operation["responses"])
    assert operation["security"] == [{"OAuth2PasswordBearer": ["inference"]}]
