"""Ollama generations over the lean HTTP/1.1 client (:mod:`switchboard_common.lean_http`):
NDJSON streams, and the non-streamed JSON POSTs (chat, generate, embed: :meth:`post_json`).

Every streamed generation is one of these calls, so their cost is in every stream's time to
first token. Through httpx (with its OpenTelemetry hook) a streamed request cost ~1 ms more
than the backend itself before the first chunk, and a non-streamed one ~2 ms more CPU,
which bounded the service's throughput under load; this client writes the request in one
``transport.write``, parses the answer with httptools' C parser and keeps connections alive
per backend (docs/benchmarks.md, S1).

Same contract as the rest of :class:`~inference_service.services.ollama.OllamaClient`:

- retried **before the first chunk only**, with exponential backoff + jitter: connect
  errors, a connection dropped before any response byte, 5xx (incl. 503-busy);
- a read timeout before the answer is not retried (the backend may still be computing):
  :class:`OllamaUnavailable`; 4xx answers are translated (404 → ``ModelNotFound`` …);
- every line is checked for ``{"error": …}`` → :class:`UpstreamStreamError`, as is a
  connection lost or silent for ``read_timeout_s`` mid-stream;
- a consumer that stops iterating (client disconnect) closes the connection, so Ollama
  sees the disconnect and cancels the generation; a finished stream's connection is reused.

One client span per call (``POST /api/chat``, kind CLIENT, ``traceparent`` sent), as the
httpx instrumentation makes for every other Ollama call; a lean span
(:func:`~switchboard_common.server_span.start_child_span`, child of the current span,
exported by the process's lean exporter), since an SDK span cost ~60 µs before the request
could be written. Plain ``http://`` backends only:
an ``https://`` backend is streamed through httpx (:class:`OllamaClient` chooses).

A call is built in two steps so the first can overlap the admission queue's Redis round
trip (``InferenceService.stream``): :meth:`LeanNdjsonClient.prepare` encodes the body and
every header but ``traceparent`` (nothing is sent); :meth:`LeanNdjsonClient.send`, once the
slot is granted, opens the client span — which therefore covers the HTTP call only, not
the queue wait — and writes the request. ``stream(path, body)`` does both at once.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import StatusCode

from inference_service.services.errors import (
    OllamaError,
    OllamaUnavailable,
    UpstreamStreamError,
    raise_for_answer,
)
from switchboard_common.lean_http import (
    UpstreamClient,
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from switchboard_common.lean_trace import KIND_CLIENT, AttributeValue, LeanSpan
from switchboard_common.server_span import propagation_headers, start_child_span

JsonDict = dict[str, Any]
ERROR_BODY_LIMIT = 64 * 1024  # bytes of a 4xx/5xx body read for its message


def error_message(body: bytes) -> str:
    """The ``error`` text of an Ollama error answer, else the start of its body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return str(data)[:200]


def json_answer(raw: bytes) -> JsonDict:
    """A non-streamed answer's JSON object (``{}`` for no body); ``{"error": …}`` in it is
    :class:`OllamaUnavailable`, a body that is not JSON :class:`OllamaError`."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise OllamaError("The model backend sent a malformed answer.") from exc
    if isinstance(data, dict) and "error" in data:
        raise OllamaUnavailable(f"The model failed: {data['error']}")
    return data if isinstance(data, dict) else {"value": data}


def parse_line(line: bytes | str) -> JsonDict | None:
    """One NDJSON line → its chunk (None for a blank line); an ``error`` line or a malformed
    one raises :class:`UpstreamStreamError`."""
    if not line.strip():
        return None
    try:
        chunk = json.loads(line)
    except ValueError as exc:
        raise UpstreamStreamError("The model backend sent a malformed line.") from exc
    if not isinstance(chunk, dict):
        raise UpstreamStreamError("The model backend sent a malformed line.")
    if "error" in chunk:
        raise UpstreamStreamError(f"The model failed mid-stream: {chunk['error']}")
    return chunk


class _Retry(Exception):
    """Internal: a failure before the answer that is worth another attempt."""


@dataclass(frozen=True, slots=True)
class PreparedPost:
    """A streamed POST built ahead of its slot: the body and the head after ``traceparent``."""

    path: str
    model: str | None
    payload: bytes
    tail: bytes  # content-type, accept, content-length and the blank line


_TAIL = (
    b"content-type: application/json\r\naccept: application/x-ndjson\r\ncontent-length: %d\r\n\r\n"
)
_JSON_TAIL = (
    b"content-type: application/json\r\naccept: application/json\r\ncontent-length: %d\r\n\r\n"
)


class LeanNdjsonClient:
    """Streaming POSTs to one plain-HTTP Ollama backend (``host:port``)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        retries: int,
        backoff: tuple[float, float, float],
        keepalive_s: float = 30.0,
    ) -> None:
        self.client = UpstreamClient(
            host, port, connect_timeout_s=connect_timeout_s, keepalive_s=keepalive_s
        )
        self.base_url = f"http://{host}:{port}"
        # per path, built once: the request line + host header, and the span's attributes
        self._heads: dict[str, tuple[bytes, dict[str, AttributeValue]]] = {}
        self.read_timeout_s = read_timeout_s
        self.retries = retries
        self.base_s, self.max_s, self.jitter_s = backoff

    def close(self) -> None:
        self.client.close()

    def _pause(self, attempt: int) -> float:
        """Like tenacity's ``wait_exponential(base, max) + wait_random(0, jitter)``."""
        wait: float = min(self.max_s, self.base_s * 2.0**attempt)
        return wait + random.uniform(0, self.jitter_s)  # noqa: S311 (jitter, not secrecy)

    def stream(self, path: str, body: JsonDict) -> AsyncIterator[JsonDict]:
        """The chunks of ``POST path`` with ``body`` (``stream`` forced on)."""
        return self.send(self.prepare(path, body))

    def prepare(self, path: str, body: JsonDict) -> PreparedPost:
        """Encode ``POST path`` with ``body`` (``stream`` forced on); nothing is sent."""
        model = body.get("model") if isinstance(body.get("model"), str) else None
        payload = json.dumps({**body, "stream": True}, separators=(",", ":")).encode()
        return PreparedPost(path, model, payload, _TAIL % len(payload))

    def _head_start(self, path: str) -> tuple[bytes, dict[str, AttributeValue]]:
        known = self._heads.get(path)
        if known is None:
            known = self._heads[path] = (
                self.client.head("POST", path.encode(), [], b"")[:-2],  # no blank line yet
                {
                    "http.request.method": "POST",
                    "url.full": self.base_url + path,
                    "server.address": self.client.host,
                    "server.port": self.client.port,
                },
            )
        return known

    def _begin(self, prepared: PreparedPost) -> tuple[LeanSpan, bytes]:
        """The call's client span, and its request head (with the span's ``traceparent``)."""
        start, attributes = self._head_start(prepared.path)
        span = start_child_span(f"POST {prepared.path}", attributes, kind=KIND_CLIENT)
        carrier = propagation_headers(span)
        head = b"".join(
            [start, *(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in carrier.items())]
        )
        return span, head + prepared.tail

    async def post_json(self, path: str, body: JsonDict) -> JsonDict:
        """``POST path`` with ``body`` as it is (a non-streamed call): the answer's JSON.
        Retried and translated like a stream before its first chunk; a connection lost
        while the answer arrives is :class:`OllamaUnavailable`. A caller that is cancelled
        (its client left) closes the connection, so Ollama cancels the generation."""
        model = body.get("model") if isinstance(body.get("model"), str) else None
        payload = json.dumps(body, separators=(",", ":")).encode()
        span, head = self._begin(PreparedPost(path, model, payload, _JSON_TAIL % len(payload)))
        conn: UpstreamConnection | None = None
        response: UpstreamResponse | None = None
        try:
            conn, response = await self._answered(span, head, payload, model)
            try:
                raw = await response.read(self.read_timeout_s)
            except UpstreamError as exc:
                raise OllamaUnavailable("The model backend dropped the connection.") from exc
            return json_answer(raw)
        except OllamaError as exc:
            _record_error(span, exc)
            raise
        finally:
            if conn is not None and response is not None:
                self.client.release(conn, response)  # closed unless complete
            span.end()

    async def send(self, prepared: PreparedPost) -> AsyncIterator[JsonDict]:
        """The chunks of a prepared call; its client span starts here."""
        model = prepared.model
        span, head = self._begin(prepared)
        payload = prepared.payload
        conn: UpstreamConnection | None = None
        response: UpstreamResponse | None = None
        try:
            conn, response = await self._answered(span, head, payload, model)
            pending = b""
            async for piece in response.iter_body(self.read_timeout_s):
                pending += piece
                while (end := pending.find(b"\n")) >= 0:
                    line, pending = pending[:end], pending[end + 1 :]
                    chunk = parse_line(line)
                    if chunk is not None:
                        yield chunk
            last = parse_line(pending)
            if last is not None:
                yield last
        except UpstreamError as exc:
            failure = UpstreamStreamError(
                f"The model backend connection failed mid-stream ({type(exc).__name__}: {exc})."
            )
            _record_error(span, failure)
            raise failure from exc
        except OllamaError as exc:
            _record_error(span, exc)
            raise
        finally:
            if conn is not None and response is not None:
                self.client.release(conn, response)  # closed unless complete: Ollama cancels
            span.end()

    async def _answered(
        self, span: LeanSpan, head: bytes, payload: bytes, model: str | None
    ) -> tuple[UpstreamConnection, UpstreamResponse]:
        """The call's connection and its answer with status < 400 (:meth:`_open`); a 4xx
        answer is read, its connection released, and raised translated."""
        conn, response = await self._open(head, payload)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 400:
            message = await _message(response)
            self.client.release(conn, response)
            raise_for_answer(response.status, message, model)
        return conn, response

    async def _open(
        self, head: bytes, payload: bytes
    ) -> tuple[UpstreamConnection, UpstreamResponse]:
        """A connection whose answer's head has arrived with status < 500 (retried)."""
        failure = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._pause(attempt - 1))
            try:
                return await self._attempt(head, payload)
            except _Retry as exc:
                failure = str(exc)
        raise OllamaUnavailable(
            f"The model backend is unavailable ({failure}).", backend=self.base_url
        )

    async def _attempt(
        self, head: bytes, payload: bytes
    ) -> tuple[UpstreamConnection, UpstreamResponse]:
        conn = self.client.idle_connection()
        reused = conn is not None
        try:
            if conn is None:
                conn = await self.client.connect()
            response = conn.start(head, payload)
            await response.read_headers(self.read_timeout_s)
        except UpstreamConnectError as exc:
            raise _Retry(f"ConnectError: {exc}") from exc
        except UpstreamDisconnected as exc:
            if conn is not None:
                conn.close()
            if reused and exc.before_response:  # a stale keep-alive socket: once more, now
                return await self._attempt(head, payload)
            raise _Retry(f"RemoteProtocolError: {exc}") from exc
        except UpstreamTimeout as exc:  # it may still be computing: no retry
            if conn is not None:
                conn.close()
            raise OllamaUnavailable(
                "The model backend did not answer in time.", backend=self.base_url
            ) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if response.status >= 500:
            message = await _message(response)
            self.client.release(conn, response)
            raise _Retry(f"{message} (HTTP {response.status})")
        return conn, response


async def _message(response: UpstreamResponse) -> str:
    """The ``error`` text of an error answer (read up to :data:`ERROR_BODY_LIMIT`)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for piece in response.iter_body(5.0):
            parts.append(piece)
            size += len(piece)
            if size >= ERROR_BODY_LIMIT:
                break
    except UpstreamError:
        pass
    return error_message(b"".join(parts))


def _record_error(span: LeanSpan, exc: BaseException) -> None:
    span.set_status(StatusCode.ERROR, str(exc)[:200])
    span.set_attribute("error.type", type(exc).__name__)
