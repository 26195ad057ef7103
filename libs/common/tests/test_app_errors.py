"""create_service_app: problem+json for every error, request ids, body limit, OpenAPI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel, Field

from switchboard_common import (
    NotFound,
    ServiceSettings,
    TooManyRequests,
    Unauthorized,
    create_service_app,
)

router = APIRouter()


class Thing(BaseModel):
    name: str = Field(min_length=1)
    size: int


@router.post("/things")
async def make_thing(thing: Thing) -> Thing:
    return thing


@router.post("/api/chat")  # a route on the Ollama wire format
async def ollama_chat(thing: Thing) -> Thing:
    if thing.name == "limited":
        raise TooManyRequests("slow down", retry_after=7)
    return thing


@router.get("/things/{name}")
async def get_thing(name: str) -> dict[str, str]:
    if name == "missing":
        raise NotFound(f"thing '{name}' does not exist", thing=name)
    if name == "limited":
        raise TooManyRequests("slow down", retry_after=7)
    if name == "secret":
        raise Unauthorized("token expired")
    if name == "crash":
        raise RuntimeError("password=hunter2 leaked in a message")
    return {"name": name}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_app(
        ServiceSettings(service_name="unit", max_body_bytes=1000),
        title="unit",
        routers=[router],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://unit") as c:
        yield c


def assert_problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = resp.json()
    assert body["status"] == status
    assert str(body["type"]).startswith("urn:switchboard:problem:")
    assert body["title"]
    assert body["request_id"] == resp.headers["x-request-id"]
    return body


async def test_problem_error_renders_with_extensions(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/things/missing"), 404)
    assert body["detail"] == "thing 'missing' does not exist"
    assert body["instance"] == "/things/missing"
    assert body["thing"] == "missing"
    assert body["type"] == "urn:switchboard:problem:not-found"


async def test_retry_after_and_www_authenticate(client: httpx.AsyncClient) -> None:
    resp = await client.get("/things/limited")
    assert_problem(resp, 429)
    assert resp.headers["retry-after"] == "7"
    resp = await client.get("/things/secret")
    assert_problem(resp, 401)
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/nowhere"), 404)
    assert "GET /nowhere" in str(body["detail"])
    body = assert_problem(await client.delete("/things"), 405)
    assert "DELETE" in str(body["detail"])


async def test_validation_error_names_the_field_without_echoing_input(
    client: httpx.AsyncClient,
) -> None:
    body = assert_problem(await client.post("/things", json={"name": "", "size": "big"}), 422)
    assert "name" in str(body["detail"]) and "size" in str(body["detail"])
    errors = body["errors"]
    assert isinstance(errors, list) and {tuple(e["loc"]) for e in errors} == {
        ("body", "name"),
        ("body", "size"),
    }
    assert "big" not in str(body)  # the rejected value is not echoed


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/things", content=b'{"name": "x", ', headers={"content-type": "application/json"}
    )
    body = assert_problem(resp, 422)
    assert any(e["type"] == "json_invalid" for e in body["errors"])  # type: ignore[union-attr]


async def test_unhandled_error_is_500_without_internals(client: httpx.AsyncClient) -> None:
    resp = await client.get("/things/crash")
    body = assert_problem(resp, 500)
    assert "hunter2" not in resp.text and "Traceback" not in resp.text
    assert "request_id" in str(body["detail"])


async def test_request_id_is_accepted_or_generated(client: httpx.AsyncClient) -> None:
    resp = await client.get("/things/a", headers={"x-request-id": "abc:123"})
    assert resp.headers["x-request-id"] == "abc:123"
    resp = await client.get("/things/a", headers={"x-request-id": "no spaces allowed"})
    assert len(resp.headers["x-request-id"]) == 32
    resp = await client.get("/things/a")
    assert len(resp.headers["x-request-id"]) == 32


async def test_body_limit_declared_length(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/things", content=b"x" * 1001), 413)
    assert body["limit_bytes"] == 1000


async def test_body_limit_streamed_body(client: httpx.AsyncClient) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 300
            await asyncio.sleep(0)

    assert_problem(await client.post("/things", content=gen()), 413)


async def test_problems_on_the_ollama_wire_format_carry_its_error_member(
    client: httpx.AsyncClient,
) -> None:
    """Every way a problem is made (a raised problem, validation, the body limit answered
    by a middleware, an unknown route) says ``error`` on ``/api/*``, and only there."""
    limited = await client.post("/api/chat", json={"name": "limited", "size": 1})
    body = assert_problem(limited, 429)
    assert body["error"] == body["detail"] == "slow down"
    assert limited.headers["retry-after"] == "7"
    invalid = assert_problem(await client.post("/api/chat", json={"name": ""}), 422)
    assert invalid["error"] == invalid["detail"]
    too_large = assert_problem(await client.post("/api/chat", content=b"x" * 1001), 413)
    assert too_large["error"] == too_large["detail"]
    unknown = assert_problem(await client.get("/api/nope"), 404)
    assert unknown["error"] == unknown["detail"]
    elsewhere = assert_problem(await client.post("/things", json={"name": ""}), 422)
    assert "error" not in elsewhere


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {
        "status": "ok",
        "service": "unit",
        "version": "0.1.0",
    }
    ready = (await client.get("/ready")).json()
    assert ready["status"] == "ready"


async def test_metrics_labelled_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/things/abc")
    await client.get("/things/def")
    await client.get("/metrics")  # a scrape is counted as itself, not as "unmatched"
    text = (await client.get("/metrics")).text
    assert 'route="/things/{name}"' in text
    assert "/things/abc" not in text
    assert 'method="GET",route="/metrics",service=' in text


async def test_openapi_documents_problem_json(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "Problem" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    responses = spec["paths"]["/things"]["post"]["responses"]
    assert "application/problem+json" in responses["422"]["content"]
    assert "500" in responses
