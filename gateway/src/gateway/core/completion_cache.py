"""The gateway completion cache's policy (L1 in front of the inference service's L2).

Pure functions and data, no I/O (the Redis side is ``services/completion_cache.py``):

- which requests may be answered from the gateway: a ``POST`` to a generation route
  (:data:`COMPLETION_PATHS`) whose body the gateway holds whole and which is
  *deterministic* by the inference service's own rule — ``options.temperature == 0`` or
  ``options.seed`` set (top-level ``temperature`` / ``seed`` on ``/v1``). The gateway's rule
  must never be wider than the service's: an answer the service sampled must not stick;
- the key: the route, the exact request body bytes and ``Accept`` — and not the caller:
  the inference service's key ignores the caller too (a deterministic answer depends on the
  request only), so every principal shares an entry;
- what a stored answer reveals at store time: whether a stream failed on the way (SSE
  ``event: error``, an OpenAI ``data: {"error"…}`` frame, an NDJSON ``{"error"…}`` line — those
  are never stored), the frames to replay one per body message, and the token usage the
  caller is charged on every hit (native/OpenAI ``usage``, native SSE ``event: usage``,
  Ollama ``prompt_eval_count`` + ``eval_count``). No usage found → not stored (e.g. an
  OpenAI stream without ``stream_options.include_usage``): the inference cache still serves
  it and reports the usage itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from gateway.core.cache import parse_cache_control
from gateway.core.token_limits import GENERATION_PATHS

# The generation routes whose answers are cached (``/code/analyze`` is not: its answer
# mixes static analysis with the review and the inference service does not cache it whole).
COMPLETION_PATHS = GENERATION_PATHS - {"/code/analyze"}
SSE = b"text/event-stream"
NDJSON = b"application/x-ndjson"
MAX_FRAMES = 8192  # frames kept per streamed answer; a longer stream is not stored


@dataclass(frozen=True, slots=True)
class ClientDirective:
    """The client's ``Cache-Control``: ``lookup`` (serve a hit) and ``store`` (keep the miss)."""

    lookup: bool = True
    store: bool = True


ANY = ClientDirective()


def client_directive(headers: list[tuple[bytes, bytes]]) -> tuple[ClientDirective, bytes]:
    """What the client allows (the inference service reads the same header the same way:
    ``no-store`` → neither, ``no-cache`` → no lookup but store), and its ``Accept``."""
    control: list[bytes] = []
    accept = b""
    for name, value in headers:
        if name == b"cache-control" or name == b"pragma":
            control.append(value)
        elif name == b"accept":
            accept = accept + b"," + value if accept else value
    if not control:
        return ANY, accept
    parsed = parse_cache_control(control)
    if parsed.no_store:
        return ClientDirective(lookup=False, store=False), accept
    if parsed.no_cache:
        return ClientDirective(lookup=False, store=True), accept
    return ANY, accept


def _is_zero(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def is_deterministic(path: str, body: bytes) -> bool:
    """The inference service's caching rule, read from the raw body (False when it is not a
    JSON object: the service will refuse it anyway)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deeply nested: not ours
        return False
    return isinstance(document, dict) and deterministic_document(path, document)


def deterministic_document(path: str, document: dict[str, Any]) -> bool:
    """:func:`is_deterministic` of a body already parsed into a JSON object."""
    if path.startswith("/v1/"):  # OpenAI's sampling fields are top-level
        return _is_zero(document.get("temperature")) or document.get("seed") is not None
    options = document.get("options")
    if not isinstance(options, dict):
        return False
    return _is_zero(options.get("temperature")) or options.get("seed") is not None


def completion_key(path: str, accept: bytes, body: bytes) -> str:
    """A digest of what the inference service was asked (not who asked)."""
    h = hashlib.sha256()
    h.update(path.encode())
    h.update(b"\x00")
    h.update(accept)
    h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


# --- reading a finished answer ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finished:
    """A complete answer as the cache keeps it: its frames (one body message each on a
    replay), and the tokens the caller is charged for it."""

    frames: list[bytes]
    tokens: int


def _tokens(doc: Any) -> int | None:
    """Usage in one JSON object: ``usage.{prompt,completion}_tokens`` (native, OpenAI), the
    same two fields at the top (a native ``usage`` event), or Ollama's counts."""
    if not isinstance(doc, dict):
        return None
    usage = doc.get("usage")
    if isinstance(usage, dict):
        doc = usage
    prompt, completion = doc.get("prompt_tokens"), doc.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt + completion
    prompt, completion = doc.get("prompt_eval_count"), doc.get("eval_count")
    if doc.get("done") is True and isinstance(prompt, int) and isinstance(completion, int):
        return prompt + completion
    return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _sse_frames(body: bytes) -> tuple[list[bytes], int | None] | None:
    """The frames to keep (``queued`` positions dropped: a hit takes no queue slot) and the
    usage; None when the stream reported an error or did not end cleanly."""
    if not body.endswith(b"\n\n"):
        return None
    frames: list[bytes] = []
    tokens: int | None = None
    for raw in body[:-2].split(b"\n\n"):
        event, data = b"", b""
        for line in raw.split(b"\n"):
            if line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        if event == b"error":
            return None
        if event == b"queued":
            continue
        doc = _json(data) if data.startswith(b"{") else None
        if isinstance(doc, dict):
            if "error" in doc:
                return None
            if not event or event == b"usage":
                found = _tokens(doc)
                tokens = found if found is not None else tokens
        frames.append(raw + b"\n\n")
    return frames, tokens


def _ndjson_frames(body: bytes) -> tuple[list[bytes], int | None] | None:
    if not body.endswith(b"\n"):
        return None
    frames = [line + b"\n" for line in body[:-1].split(b"\n")]
    for frame in frames:
        if frame.startswith(b'{"error"'):
            return None
    last = _json(frames[-1])
    if isinstance(last, dict) and "error" in last:
        return None
    return frames, _tokens(last)


def finished_answer(content_type: bytes, body: bytes, streamed: bool) -> Finished | str:
    """The answer as the cache keeps it, or why it is not kept (``failed``, ``no_usage``,
    ``too_many_frames``)."""
    if not streamed:
        tokens = _tokens(_json(body))
        return "no_usage" if tokens is None else Finished([body], tokens)
    if content_type.startswith(SSE):
        parsed = _sse_frames(body)
    elif content_type.startswith(NDJSON):
        parsed = _ndjson_frames(body)
    else:
        parsed = None
    if parsed is None:
        return "failed"
    frames, tokens = parsed
    if tokens is None:
        return "no_usage"
    if len(frames) > MAX_FRAMES:
        return "too_many_frames"
    return Finished(frames, tokens)
