"""RFC 9457 problem details: the one error model of every service.

Exception tree (raise these from handlers and services; one handler renders them)::

    ProblemError                 500  base: status, type slug, title
    ├── BadRequest               400
    ├── Unauthorized             401  adds WWW-Authenticate: Bearer
    ├── Forbidden                403
    ├── NotFound                 404
    ├── Conflict                 409
    ├── RequestTimeout           408
    ├── PayloadTooLarge          413
    ├── UnprocessableContent     422
    ├── TooManyRequests          429  adds Retry-After
    ├── InternalError            500
    ├── BadGateway               502
    ├── ServiceUnavailable       503  adds Retry-After when given
    └── GatewayTimeout           504

Every rendered problem carries ``request_id`` and ``trace_id`` so a user can quote them
and an operator can find the trace. Problem types are URNs documented in docs/problems.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from switchboard_common.request_context import current_request_id, current_trace_id

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:switchboard:problem:"

_STATUS_SLUGS: dict[int, tuple[str, str]] = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    406: ("not-acceptable", "Not Acceptable"),
    408: ("request-timeout", "Request Timeout"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload Too Large"),
    415: ("unsupported-media-type", "Unsupported Media Type"),
    422: ("validation-error", "Unprocessable Content"),
    429: ("rate-limited", "Too Many Requests"),
    431: ("headers-too-large", "Request Header Fields Too Large"),
    500: ("internal-error", "Internal Server Error"),
    502: ("bad-gateway", "Bad Gateway"),
    503: ("service-unavailable", "Service Unavailable"),
    504: ("gateway-timeout", "Gateway Timeout"),
}


def problem_type(slug: str) -> str:
    """The full type URI for a slug, e.g. ``not-found`` → ``urn:switchboard:problem:not-found``."""
    return TYPE_PREFIX + slug


def default_slug_and_title(status: int) -> tuple[str, str]:
    return _STATUS_SLUGS.get(status, ("http-error", "HTTP Error"))


class Problem(BaseModel):
    """The problem+json body (RFC 9457) with Switchboard's correlation members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[problem_type("not-found")])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(default=None, examples=["collection 'docs' does not exist"])
    instance: str | None = Field(default=None, examples=["/knowledge/collections/docs"])
    request_id: str | None = None
    trace_id: str | None = None


class ProblemError(Exception):
    """Base of every error a service raises on purpose."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal Server Error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        slug: str | None = None,
        title: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers: dict[str, str] = dict(headers or {})
        self.problem_slug = slug or self.slug
        self.problem_title = title or self.title
        self.extensions = extensions


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Bad Request"


class RequestTimeout(ProblemError):
    status = 408
    slug = "request-timeout"
    title = "Request Timeout"


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not Found"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Payload Too Large"


class UnprocessableContent(ProblemError):
    status, slug, title = 422, "validation-error", "Unprocessable Content"


class TooManyRequests(ProblemError):
    status, slug, title = 429, "rate-limited", "Too Many Requests"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.headers.setdefault("Retry-After", str(max(1, retry_after)))


class InternalError(ProblemError):
    status, slug, title = 500, "internal-error", "Internal Server Error"


class BadGateway(ProblemError):
    status, slug, title = 502, "bad-gateway", "Bad Gateway"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service Unavailable"

    def __init__(
        self, detail: str | None = None, *, retry_after: int | None = None, **kw: Any
    ) -> None:
        super().__init__(detail, **kw)
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, retry_after)))


class GatewayTimeout(ProblemError):
    status, slug, title = 504, "gateway-timeout", "Gateway Timeout"


OLLAMA_WIRE_PREFIX = "/api/"  # the Ollama-compatible routes (ARCHITECTURE.md)


def problem_body(
    status: int,
    *,
    detail: str | None = None,
    slug: str | None = None,
    title: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The problem document as a dict; correlation ids default to the current request's.

    On the Ollama wire format (``instance`` under ``/api/``) it also carries Ollama's own
    error member, ``"error": <detail>``: Ollama's clients read that member (the official
    ``ollama`` package raises ``ResponseError(body["error"])``, else the whole body text).
    RFC 9457 allows extension members, so the document stays a problem for everyone else.
    """
    default_slug, default_title = default_slug_and_title(status)
    body: dict[str, Any] = {
        "type": problem_type(slug or default_slug),
        "title": title or default_title,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body["request_id"] = request_id or current_request_id()
    body["trace_id"] = trace_id or current_trace_id()
    if extensions:
        for key, value in extensions.items():
            body.setdefault(key, value)
    if instance is not None and instance.startswith(OLLAMA_WIRE_PREFIX):
        body.setdefault("error", body.get("detail") or body["title"])
    return body


def problem_bytes(status: int, **kwargs: Any) -> bytes:
    """Serialised problem document (for raw ASGI paths that build responses by hand)."""
    return json.dumps(problem_body(status, **kwargs), separators=(",", ":")).encode()


def problem_messages(
    status: int,
    detail: str,
    *,
    instance: str | None,
    request_id: str | None,
    trace_id: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    extensions: Mapping[str, Any] | None = None,
    prefix: str = "http",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The problem as the two ASGI messages of a response, for raw ASGI code paths.

    ``prefix="websocket.http"`` builds a WebSocket denial response instead.
    """
    body = problem_bytes(
        status,
        detail=detail,
        instance=instance,
        request_id=request_id,
        trace_id=trace_id,
        extensions=extensions,
    )
    response_headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *(headers or ()),
    ]
    if request_id:
        response_headers.append((b"x-request-id", request_id.encode()))
    start = {"type": f"{prefix}.response.start", "status": status, "headers": response_headers}
    return start, {"type": f"{prefix}.response.body", "body": body}


def problem_from_error(error: ProblemError, *, instance: str | None = None) -> dict[str, Any]:
    return problem_body(
        error.status,
        detail=error.detail,
        slug=error.problem_slug,
        title=error.problem_title,
        instance=instance,
        extensions=error.extensions,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for route decorators so OpenAPI shows the problem shape."""
    return {
        status: {
            "model": Problem,
            "description": default_slug_and_title(status)[1],
            "content": {PROBLEM_CONTENT_TYPE: {}},
        }
        for status in statuses
    }
