"""``OllamaClient``: one Ollama backend over its REST API (JSON and NDJSON streams).

Retries (tenacity, exponential backoff + jitter) cover connect errors, dropped connections
without a response, 5xx and 503-busy — **before the first chunk only**. A read timeout
before the answer is not retried (the backend may still be computing): it is a 503.
Once a stream has yielded a chunk nothing is retried: a failure becomes
:class:`UpstreamStreamError`.

Error translation (tree in :mod:`inference_service.services.errors`): 404 → ``ModelNotFound``,
400 → ``OllamaBadRequest`` (422), connect/5xx after retries → ``OllamaUnavailable`` (503),
a ``{"error": …}`` line or a broken connection mid-stream → ``UpstreamStreamError``.

A consumer that stops iterating (client disconnect) closes the upstream response in the
generator's ``finally``, so Ollama sees the disconnect and cancels the generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from inference_service.services.errors import (
    OllamaUnavailable,
    UpstreamStreamError,
    raise_for_answer,
)
from inference_service.services.ollama_stream import (
    LeanNdjsonClient,
    error_message,
    json_answer,
    parse_line,
)

JsonDict = dict[str, Any]
StreamKind = Literal["chat", "generate"]
#: A generation stream ready to be sent: calling it starts the Ollama call.
StreamCall = Callable[[], AsyncIterator[JsonDict]]
_STREAM_PATHS: dict[StreamKind, str] = {"chat": "/api/chat", "generate": "/api/generate"}
_TRANSPORT_ERRORS = (httpx.TransportError,)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry before the first chunk."""

    retries: int = 3
    base_s: float = 0.1
    max_s: float = 2.0
    jitter_s: float = 0.1


class _Retryable(Exception):
    """Internal: a failure worth another attempt (wraps the cause)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _lean_client(http: httpx.AsyncClient, retry: RetryPolicy) -> LeanNdjsonClient | None:
    url = http.base_url
    # plain http at the root only: a path prefix (a reverse proxy) or credentials in the
    # URL stay with httpx, which applies them
    if url.scheme != "http" or not url.host or url.raw_path not in (b"", b"/") or url.userinfo:
        return None
    timeout = http.timeout
    return LeanNdjsonClient(
        url.host,
        url.port or 80,
        connect_timeout_s=timeout.connect or 5.0,
        read_timeout_s=timeout.read or 300.0,
        retries=retry.retries,
        backoff=(retry.base_s, retry.max_s, retry.jitter_s),
    )


class OllamaClient:
    """Typed calls to one backend; ``http`` is owned by the caller (lifespan)."""

    def __init__(self, http: httpx.AsyncClient, retry: RetryPolicy | None = None) -> None:
        self.http = http
        self.retry = retry or RetryPolicy()
        # the backend's name in the pool, the queue and errors: read on every request
        self._base_url = str(http.base_url).rstrip("/")
        # streams (every generation's hot path) go over the lean client when it can reach
        # the backend: plain http:// only (docs/inference.md#backends)
        self.lean = _lean_client(http, self.retry)

    def close(self) -> None:
        """Close the lean client's pooled connections (``http`` is closed by its owner)."""
        if self.lean is not None:
            self.lean.close()

    @property
    def base_url(self) -> str:
        return self._base_url

    # --- plumbing -------------------------------------------------------------------------

    def _retrying(self) -> AsyncRetrying:
        p = self.retry
        return AsyncRetrying(
            stop=stop_after_attempt(p.retries + 1),
            wait=wait_exponential(multiplier=p.base_s, max=p.max_s) + wait_random(0, p.jitter_s),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )

    async def _send(self, method: str, path: str, body: JsonDict | None) -> httpx.Response:
        """Send with retries; returns an open (streamed) response with status < 500."""
        request = self.http.build_request(method, path, json=body)
        try:
            async for attempt in self._retrying():
                with attempt:
                    try:
                        response = await self.http.send(request, stream=True)
                    except httpx.ReadTimeout as exc:  # it may still be computing: no retry
                        raise OllamaUnavailable(
                            "The model backend did not answer in time.", backend=self.base_url
                        ) from exc
                    except _TRANSPORT_ERRORS as exc:
                        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                    if response.status_code >= 500:
                        text = error_message(await response.aread())
                        await response.aclose()
                        raise _Retryable(text, response.status_code)
                    return response
        except _Retryable as exc:
            raise OllamaUnavailable(
                f"The model backend is unavailable ({exc}).", backend=self.base_url
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _check(self, response: httpx.Response, model: str | None) -> None:
        """Raise the translated error for a 4xx answer (closes the response)."""
        if response.status_code < 400:
            return
        message = error_message(await response.aread())
        await response.aclose()
        raise_for_answer(response.status_code, message, model)

    async def _json(self, method: str, path: str, body: JsonDict | None = None) -> JsonDict:
        model = body.get("model") if body else None
        response = await self._send(method, path, body)
        await self._check(response, model if isinstance(model, str) else None)
        try:
            raw = await response.aread()
        except _TRANSPORT_ERRORS as exc:
            raise OllamaUnavailable("The model backend dropped the connection.") from exc
        finally:
            await response.aclose()
        return json_answer(raw)

    async def _post_json(self, path: str, body: JsonDict) -> JsonDict:
        """A generation's non-streamed POST: over the lean client when it reaches the
        backend (as streams are), else httpx; the same retries, errors and span."""
        if self.lean is not None:
            return await self.lean.post_json(path, body)
        return await self._json("POST", path, body)

    def _stream(self, path: str, body: JsonDict) -> AsyncIterator[JsonDict]:
        if self.lean is not None:
            return self.lean.stream(path, body)
        return self._httpx_stream(path, body)

    async def _httpx_stream(self, path: str, body: JsonDict) -> AsyncIterator[JsonDict]:
        model = body.get("model")
        response = await self._send("POST", path, {**body, "stream": True})
        try:
            await self._check(response, model if isinstance(model, str) else None)
            async for line in response.aiter_lines():
                chunk = parse_line(line)
                if chunk is not None:
                    yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise UpstreamStreamError(
                f"The model backend connection failed mid-stream ({type(exc).__name__})."
            ) from exc
        finally:
            await response.aclose()

    # --- models ---------------------------------------------------------------------------

    async def list_models(self) -> list[JsonDict]:
        models = (await self._json("GET", "/api/tags")).get("models", [])
        return list(models)

    async def show(self, model: str) -> JsonDict:
        return await self._json("POST", "/api/show", {"model": model})

    def pull(self, model: str) -> AsyncIterator[JsonDict]:
        return self._stream("/api/pull", {"model": model})

    async def delete(self, model: str) -> None:
        response = await self._send("DELETE", "/api/delete", {"model": model})
        await self._check(response, model)
        await response.aclose()

    async def ps(self) -> list[JsonDict]:
        return list((await self._json("GET", "/api/ps")).get("models", []))

    async def version(self) -> str:
        return str((await self._json("GET", "/api/version")).get("version", ""))

    # --- inference ------------------------------------------------------------------------

    async def chat(self, body: JsonDict) -> JsonDict:
        return await self._post_json("/api/chat", {**body, "stream": False})

    async def generate(self, body: JsonDict) -> JsonDict:
        return await self._post_json("/api/generate", {**body, "stream": False})

    def stream_chat(self, body: JsonDict) -> AsyncIterator[JsonDict]:
        return self._stream("/api/chat", body)

    def stream_generate(self, body: JsonDict) -> AsyncIterator[JsonDict]:
        return self._stream("/api/generate", body)

    def prepare_stream(self, kind: StreamKind, body: JsonDict) -> StreamCall:
        """``stream_chat`` / ``stream_generate`` in two steps: this encodes the request (no
        I/O, no span), the returned call sends it. Lets the encoding overlap the admission
        queue's round trip; on the httpx path the call does all of the work."""
        path = _STREAM_PATHS[kind]
        if self.lean is not None:
            return partial(self.lean.send, self.lean.prepare(path, body))
        return partial(self._httpx_stream, path, body)

    async def embed(self, body: JsonDict) -> JsonDict:
        return await self._post_json("/api/embed", body)
