"""Server-sent events and NDJSON framing, and the generation→event conversion."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from switchboard_common import ProblemError, problem_body
from switchboard_common.problems import problem_from_error

logger = logging.getLogger("inference.stream")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str | None, data: Any) -> bytes:
    """One SSE frame (``event:`` line omitted when ``event`` is None)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def ndjson(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def error_problem(exc: BaseException) -> dict[str, Any]:
    """The problem document for an exception raised while streaming. A ``Retry-After`` the
    error would have sent as a header (a 503 from the queue, …) cannot follow a response
    head already sent: it rides in the document as ``retry_after`` (seconds)."""
    if isinstance(exc, ProblemError):
        body = problem_from_error(exc)
        retry_after = (exc.headers or {}).get("Retry-After", "")
        if retry_after.isdigit():
            body.setdefault("retry_after", int(retry_after))
        return body
    logger.exception("stream failed", exc_info=exc)
    return problem_body(500, detail="The stream failed unexpectedly.")


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text piece in an Ollama chat or generate chunk."""
    message = chunk.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or "")
    return str(chunk.get("response") or "")


def usage_of(chunk: dict[str, Any]) -> dict[str, int]:
    return {
        "prompt_tokens": int(chunk.get("prompt_eval_count") or 0),
        "completion_tokens": int(chunk.get("eval_count") or 0),
    }


NativeEvent = tuple[str, dict[str, Any]]


async def native_events(
    events: AsyncIterator[tuple[str, dict[str, Any]]],
) -> AsyncIterator[NativeEvent]:
    """``(name, data)``: queued/token/usage/done, or a final ``error`` with a problem."""
    try:
        async for name, data in events:
            if name == "queued":
                yield "queued", {"position": data["position"]}
                continue
            for event in chunk_events(data):
                yield event
    except Exception as exc:
        yield "error", error_problem(exc)


def chunk_events(chunk: dict[str, Any]) -> list[NativeEvent]:
    """The native events of one Ollama chunk: its ``token``; ``usage`` and ``done`` last."""
    events: list[NativeEvent] = []
    piece = chunk_text(chunk)
    if piece:
        events.append(("token", {"content": piece}))
    if chunk.get("done"):
        events.append(("usage", usage_of(chunk)))
        events.append(("done", {"done_reason": chunk.get("done_reason") or "stop"}))
    return events


async def sse_stream(events: AsyncIterator[NativeEvent]) -> AsyncIterator[bytes]:
    """Native events as SSE frames: ``event: token`` / ``data: {"content": …}``."""
    async for name, data in events:
        yield sse(name, data)


def ws_message(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A native event as a WebSocket message; an error carries its problem under ``problem``."""
    return {"type": name, "problem": data} if name == "error" else {"type": name, **data}
