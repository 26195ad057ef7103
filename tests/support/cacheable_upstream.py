"""A test upstream for the gateway's response cache, built like a real service.

Run: ``python -m tests.support.cacheable_upstream`` (port from ``CACHEABLE_PORT``). It also
serves ``/auth/.well-known/jwks.json`` from ``CACHEABLE_JWKS`` (a public JWKS the test signs
tokens for), so the gateway can verify real bearer tokens without an auth service.

``GET /{prefix}/{path}`` answers who asked (the gateway-signed identity, verified like any
service does), the data ``version`` (bumped by every write) and how many times this path
was served by the upstream. Query parameters shape the answer's headers: ``cc`` →
``Cache-Control``, ``etag`` → ``ETag``, ``vary`` → ``Vary``, ``invalidate`` →
``Switchboard-Cache-Invalidate``, ``stream=1`` → NDJSON. Writes (POST/PUT/PATCH/DELETE) bump
the version and answer ``status`` (default 201/204), with ``invalidate`` as for reads.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings, create_service_app, serve
from switchboard_common.identity import CurrentPrincipal

router = APIRouter()
STATE: dict[str, Any] = {"version": 1, "served": Counter()}


class CacheableSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CACHEABLE_", extra="ignore")
    service_name: str = "cacheable"
    jwks: str = '{"keys": []}'


@router.get("/auth/.well-known/jwks.json")
async def jwks() -> Response:
    return Response(CacheableSettings().jwks, media_type="application/json")


def _headers(
    cc: str | None, etag: str | None, vary: str | None, invalidate: str | None
) -> dict[str, str]:
    named = {
        "cache-control": cc,
        "etag": etag,
        "vary": vary,
        "switchboard-cache-invalidate": invalidate,
    }
    return {k: v for k, v in named.items() if v is not None}


@router.get("/{prefix}/{path:path}")
async def read(
    prefix: str,
    path: str,
    request: Request,
    principal: CurrentPrincipal,
    cc: str | None = Query(default=None),
    etag: str | None = Query(default=None),
    vary: str | None = Query(default=None),
    invalidate: str | None = Query(default=None),
    stream: bool = Query(default=False),
) -> Response:
    key = request.url.path
    STATE["served"][key] += 1
    body = {
        "path": key,
        "sub": principal.sub,
        "version": STATE["version"],
        "served": STATE["served"][key],
        "query": request.url.query,
        "if_none_match": request.headers.get("if-none-match"),
    }
    headers = _headers(cc, etag, vary, invalidate)
    if stream:

        async def lines() -> AsyncIterator[bytes]:
            yield json.dumps(body).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)
    return JSONResponse(body, headers=headers)


@router.api_route("/{prefix}/{path:path}", methods=["POST", "PUT", "PATCH", "DELETE"])
async def write(
    prefix: str,
    path: str,
    request: Request,
    principal: CurrentPrincipal,
    status: int | None = Query(default=None, ge=200, le=599),
    invalidate: str | None = Query(default=None),
) -> Response:
    headers = _headers(None, None, None, invalidate)
    code = status or (204 if request.method == "DELETE" else 201)
    if 200 <= code < 300:
        STATE["version"] += 1
    if code == 204:
        return Response(status_code=204, headers=headers)
    return JSONResponse({"version": STATE["version"]}, status_code=code, headers=headers)


def create_app() -> Any:
    return create_service_app(CacheableSettings(), title="cacheable upstream", routers=[router])


if __name__ == "__main__":
    serve(
        "tests.support.cacheable_upstream:create_app",
        CacheableSettings(port=int(os.environ["CACHEABLE_PORT"])),
        factory=True,
    )
