"""Errors of the Ollama boundary, translated to problem+json.

Exception tree (every Ollama/httpx failure becomes one of these, ``raise … from exc``)::

    ProblemError (switchboard_common)
    └── OllamaError                502  base of every upstream failure
        ├── ModelNotFound          404  unknown model; ``available_models`` lists the known
        ├── BackendNotFound        404  ``?backend=`` names no configured backend
        ├── OllamaBadRequest       422  Ollama refused the request (400: bad option, …)
        ├── OllamaUnavailable      503  connect error / 5xx / busy after retries; Retry-After
        └── UpstreamStreamError    502  failure after streaming began ({"error"} line, drop)

Only ``OllamaUnavailable`` counts against a backend's circuit breaker.
"""

from __future__ import annotations

from typing import Any

from switchboard_common import ProblemError


class OllamaError(ProblemError):
    """Base: Ollama answered with something we cannot pass on."""

    status, slug, title = 502, "bad-gateway", "Bad Gateway"


class ModelNotFound(OllamaError):
    """The model is on no healthy backend."""

    status, slug, title = 404, "not-found", "Not Found"

    def __init__(self, model: str, available: list[str], **kw: Any) -> None:
        names = ", ".join(available) or "none"
        super().__init__(
            f"Model '{model}' not found. Available models: {names}.",
            available_models=available,
            **kw,
        )


class BackendNotFound(OllamaError):
    """A request named a backend (``?backend=``) that is not configured."""

    status, slug, title = 404, "not-found", "Not Found"

    def __init__(self, backend: str, backends: list[str], **kw: Any) -> None:
        super().__init__(
            f"No backend {backend}. Backends: {', '.join(backends) or 'none'}.",
            backends=backends,
            **kw,
        )


class OllamaBadRequest(OllamaError):
    """Ollama rejected the request as invalid."""

    status, slug, title = 422, "validation-error", "Unprocessable Content"


class OllamaUnavailable(OllamaError):
    """No backend could serve the request (down, overloaded, 5xx)."""

    status, slug, title = 503, "service-unavailable", "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: int = 2, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.headers.setdefault("Retry-After", str(max(1, retry_after)))


class UpstreamStreamError(OllamaError):
    """The model failed after output had begun; the stream cannot be resumed."""

    status, slug, title = 502, "bad-gateway", "Bad Gateway"


def raise_for_answer(status: int, message: str, model: str | None) -> None:
    """Raise the translated error for an Ollama answer with ``status`` >= 400."""
    if status < 400:
        return
    if status == 404 and model is not None:
        raise ModelNotFound(model, [])
    if status == 429:
        raise OllamaUnavailable(f"The model backend is overloaded: {message}")
    if status in (400, 422):
        raise OllamaBadRequest(f"The model backend rejected the request: {message}")
    raise OllamaError(f"The model backend answered {status}: {message}")
