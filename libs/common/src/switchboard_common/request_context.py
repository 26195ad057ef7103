"""Per-request correlation: the request id and the current trace id.

``RequestContextMiddleware`` (pure ASGI, no per-request allocations beyond the id):
- accepts a sane incoming ``X-Request-ID`` (1–128 chars of ``[A-Za-z0-9._:-]``), else
  generates one, stores it in a context variable and in ``scope["state"]``, and echoes it
  back on the response;
- turns any exception that escapes the app into a 500 problem+json with no stack trace
  (the trace goes to the log, with the request id).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from contextvars import ContextVar

from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")

_request_id: ContextVar[str | None] = ContextVar("switchboard_request_id", default=None)
logger = logging.getLogger("switchboard.errors")


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> None:
    _request_id.set(value)


def current_trace_id() -> str | None:
    """The active span's trace id as 32 hex chars, or None outside a recorded trace."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> str:
    """32 hex chars, unique per process run: a random process prefix and a counter.

    Request ids must be unique, not secret; this costs a fraction of ``uuid4()`` (no
    syscall) on the gateway's hot path. Re-seeded in each forked worker.
    """
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def _reseed_after_fork() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX = os.urandom(8).hex()
    _id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


os.register_at_fork(after_in_child=_reseed_after_fork)


def request_id_from_headers(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.match(value):
                return value.decode("ascii")
            break
    return new_request_id()


class RequestContextMiddleware:
    """Request id in, request id out; last-resort 500 problem for escaped exceptions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from_headers(scope["headers"])
        token = _request_id.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [
                    *(h for h in message.get("headers", ()) if h[0].lower() != REQUEST_ID_HEADER),
                    header,
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error", extra={"request_id": request_id, "path": scope.get("path")}
            )
            if scope["type"] != "http" or started:
                raise
            await _send_internal_error(send, scope, request_id)
        finally:
            _request_id.reset(token)


async def _send_internal_error(send: Send, scope: Scope, request_id: str) -> None:
    from switchboard_common.problems import problem_messages  # problems imports this module

    for message in problem_messages(
        500,
        "The server hit an unexpected error. Quote the request_id when reporting it.",
        instance=scope.get("path"),
        request_id=request_id,
        trace_id=current_trace_id(),
    ):
        await send(message)
