"""One set of exception handlers that renders every error as problem+json.

- :class:`~switchboard_common.problems.ProblemError` → its status, type and extensions.
- Starlette/FastAPI ``HTTPException`` (404 for unknown routes, 405, …) → matching problem.
- ``RequestValidationError`` → 422 problem whose ``detail`` names the failing fields and
  whose ``errors`` member lists them (``loc``, ``msg``, ``type``) — input values are not
  echoed back, so a password in a bad form never reaches a log or a response.
- anything else → 500 problem without a stack trace (see ``RequestContextMiddleware``).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from switchboard_common.problems import (
    PROBLEM_CONTENT_TYPE,
    ProblemError,
    problem_body,
    problem_from_error,
)

logger = logging.getLogger("switchboard.errors")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE


def problem_response(
    status: int, *, headers: dict[str, str] | None = None, **kwargs: Any
) -> ProblemResponse:
    return ProblemResponse(problem_body(status, **kwargs), status_code=status, headers=headers)


async def _problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    body = problem_from_error(exc, instance=request.url.path)
    return ProblemResponse(body, status_code=exc.status, headers=exc.headers or None)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.method} {request.url.path}."
    if exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}."
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(
        exc.status_code, detail=detail, instance=request.url.path, headers=headers
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) if parts else ".".join(str(p) for p in loc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    described = [f"{_field_name(tuple(e['loc'])) or 'body'}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return problem_response(
        422,
        detail="Invalid request. " + "; ".join(described) + more,
        instance=request.url.path,
        extensions={"errors": errors},
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return problem_response(
        500,
        detail="The server hit an unexpected error. Quote the request_id when reporting it.",
        instance=request.url.path,
    )


def install_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)


async def respond_with_app_handler(
    app: FastAPI, exc: Exception, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer ``exc`` from raw ASGI code as ``app`` would from a route: with the nearest
    handler in the exception's class hierarchy (as Starlette looks it up); re-raised when
    the app has none."""
    handlers = app.exception_handlers
    handler = next((handlers[k] for k in type(exc).__mro__ if k in handlers), None)
    if handler is None:
        raise exc
    response = handler(Request(scope, receive), exc)
    if inspect.isawaitable(response):
        response = await response
    await response(scope, receive, send)
