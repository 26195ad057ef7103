"""A test upstream built like a real service (``create_service_app``), with routes that let
gateway tests see exactly what arrived and control how the answer streams.

Run: ``python -m tests.support.echo_upstream`` (port from ``ECHO_PORT``). Every route
lives under any first path segment, so the gateway can route to it as any service.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings, create_service_app, serve


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ECHO_", extra="ignore")
    service_name: str = "echo"


router = APIRouter()
STATS = {
    "streams_started": 0,
    "streams_completed": 0,
    "streams_cancelled": 0,
    "slow_cancelled": 0,
    "echo_requests": 0,
}


class Item(BaseModel):
    name: str = Field(min_length=1)
    count: int = Field(ge=0)


@router.api_route("/{prefix}/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(prefix: str, request: Request) -> dict[str, Any]:
    body = await request.body()
    STATS["echo_requests"] += 1
    return {
        "method": request.method,
        "path": request.url.path,
        "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
        "query": request.url.query,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("utf-8", "replace"),
        "body_len": len(body),
    }


@router.post("/{prefix}/items", status_code=201)
async def create_item(prefix: str, item: Item) -> Item:
    return item


@router.get("/{prefix}/stream")
async def stream(
    prefix: str,
    n: int = Query(default=5, ge=1, le=1000),
    interval: float = Query(default=0.2, ge=0, le=10),
    kind: str = Query(default="ndjson", pattern="^(ndjson|sse)$"),
) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        STATS["streams_started"] += 1
        try:
            for i in range(n):
                if kind == "sse":
                    yield f'event: token\ndata: {{"i": {i}}}\n\n'.encode()
                else:
                    yield f'{{"i": {i}}}\n'.encode()
                if i < n - 1:
                    await asyncio.sleep(interval)
        except asyncio.CancelledError:
            STATS["streams_cancelled"] += 1
            raise
        STATS["streams_completed"] += 1

    media = "text/event-stream" if kind == "sse" else "application/x-ndjson"
    return StreamingResponse(chunks(), media_type=media)


@router.get("/{prefix}/stream-stats")
async def stream_stats(prefix: str) -> dict[str, int]:
    return STATS


@router.get("/{prefix}/slow")
async def slow(
    prefix: str, request: Request, seconds: float = Query(default=3.0, le=60)
) -> dict[str, float]:
    """Answers after ``seconds``, unless the caller goes away first (counted)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await request.is_disconnected():
            STATS["slow_cancelled"] += 1
            return {"slept": -1}
        await asyncio.sleep(0.05)
    return {"slept": seconds}


@router.post("/{prefix}/refuse-upload")
async def refuse_upload(prefix: str) -> Response:
    """Answers 413 without reading the body, like a service enforcing its own limit."""
    return Response(status_code=413, headers={"connection": "close"})


@router.get("/{prefix}/big")
async def big(
    prefix: str, size: int = Query(default=2_000_000, le=50_000_000)
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        block = b"x" * 65536
        left = size
        while left > 0:
            yield block[: min(left, len(block))]
            left -= len(block)

    return StreamingResponse(body(), headers={"content-length": str(size)})


@router.get("/{prefix}/boom")
async def boom(prefix: str) -> None:
    raise RuntimeError("secret internal detail that must not leak")


@router.websocket("/{prefix}/ws")
async def ws_echo(websocket: WebSocket, prefix: str) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                text = message["text"]
                if text.startswith("close:"):
                    await websocket.close(code=int(text.split(":", 1)[1]))
                    return
                if text == "headers":
                    await websocket.send_json(dict(websocket.headers))
                    continue
                await websocket.send_text("echo:" + text)
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        return


def create_app() -> Any:
    return create_service_app(EchoSettings(), title="echo upstream", routers=[router])


if __name__ == "__main__":
    serve(
        "tests.support.echo_upstream:create_app",
        EchoSettings(port=int(os.environ["ECHO_PORT"])),
        factory=True,
    )
