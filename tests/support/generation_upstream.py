"""A test upstream standing in for the inference service's generation routes.

Run: ``python -m tests.support.generation_upstream`` (port from ``GENERATION_PORT``). Like
``cacheable_upstream`` it serves ``/auth/.well-known/jwks.json`` from ``GENERATION_JWKS``, so
the gateway verifies real bearer tokens without an auth service.

``POST /inference/chat`` (any body) records when it arrived (``time.monotonic()``: the same
clock in every process of this machine), its body and the token reservation the gateway
forwarded, then answers: ``"stream": true`` → an SSE stream of ``GENERATION_TOKENS`` token
events ``GENERATION_INTERVAL_S`` apart (a stream the client leaves is counted as
cancelled); otherwise a JSON answer. ``GET /inference/_seen`` returns the records.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings, create_service_app, serve
from switchboard_common.internal_calls import TOKEN_RESERVATION_HEADER

router = APIRouter()
SEEN: dict[str, Any] = {"requests": [], "completed": 0, "cancelled": 0}


class GenerationSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GENERATION_", extra="ignore")
    service_name: str = "generation"
    jwks: str = '{"keys": []}'
    tokens: int = 5
    interval_s: float = 0.05


@router.get("/auth/.well-known/jwks.json")
async def jwks() -> Response:
    return Response(GenerationSettings().jwks, media_type="application/json")


@router.post("/inference/chat")
async def chat(request: Request) -> Response:
    arrived = time.monotonic()
    body = await request.body()
    document = json.loads(body or b"{}")
    SEEN["requests"].append(
        {
            "arrived": arrived,
            "content": (document.get("messages") or [{}])[-1].get("content"),
            "reservation": request.headers.get(TOKEN_RESERVATION_HEADER),
        }
    )
    settings = GenerationSettings()
    if document.get("stream") is not True:
        return JSONResponse({"message": {"role": "assistant", "content": "ok"}, "done": True})

    async def events() -> AsyncIterator[bytes]:
        try:
            for i in range(settings.tokens):
                yield f'event: token\ndata: {{"i": {i}}}\n\n'.encode()
                await asyncio.sleep(settings.interval_s)
        except asyncio.CancelledError:
            SEEN["cancelled"] += 1
            raise
        SEEN["completed"] += 1
        yield b'event: done\ndata: {"done": true}\n\n'

    return StreamingResponse(events(), media_type="text/event-stream")


@router.get("/inference/_seen")
async def seen() -> dict[str, Any]:
    return SEEN


def create_app() -> Any:
    return create_service_app(GenerationSettings(), title="generation upstream", routers=[router])


if __name__ == "__main__":
    serve(
        "tests.support.generation_upstream:create_app",
        GenerationSettings(port=int(os.environ["GENERATION_PORT"])),
        factory=True,
    )
