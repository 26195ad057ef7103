"""Errors on the Ollama wire format carry Ollama's ``error`` member too.

Ollama answers a failed request with ``{"error": "…"}``, and its clients read that member:
the official ``ollama`` package raises ``ResponseError(body["error"])``, and falls back to
the whole body text when the member is missing. Every error here is problem+json (RFC
9457); on ``/api/*`` it also gets ``"error": <detail>`` — an extension member, which RFC 9457
allows — so those clients show the problem's sentence, not a JSON document.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from switchboard_common import ProblemResponse
from switchboard_common.problems import PROBLEM_CONTENT_TYPE

OLLAMA_PREFIX = "/api/"
Handler = Callable[[Request, Any], Response | Awaitable[Response]]
_DROPPED = frozenset({"content-length", "content-type"})


def with_ollama_error_member(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with ``error`` set to its ``detail`` (else its ``title``), unless it has one."""
    if "error" not in body:
        body["error"] = body.get("detail") or body.get("title") or "request failed"
    return body


def add_ollama_error_member(app: FastAPI) -> None:
    """Wrap every exception handler of ``app`` so a problem answered on ``/api/*`` carries
    ``error``. Call after the handlers are installed, before the app serves a request."""
    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _wrapped(handler)


def _wrapped(handler: Handler) -> Callable[[Request, Any], Awaitable[Response]]:
    async def handle(request: Request, exc: Any) -> Response:
        response = handler(request, exc)
        if not isinstance(response, Response):
            response = await response
        if not request.url.path.startswith(OLLAMA_PREFIX):
            return response
        if response.media_type != PROBLEM_CONTENT_TYPE or not isinstance(response.body, bytes):
            return response
        body = with_ollama_error_member(json.loads(response.body))
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _DROPPED}
        return ProblemResponse(body, status_code=response.status_code, headers=headers)

    return handle
