"""The streaming hot path: ``POST /inference/chat`` and ``/inference/generate`` with
``"stream": true``, served as raw ASGI instead of through FastAPI's routing.

Time to first token is what a streaming user feels, and FastAPI's per-request machinery
(routing, body parsing, dependency solving) was ~1.5 ms of the service's added time
(docs/benchmarks.md, S1). This component wraps the app's whole middleware stack and does
the same work directly:

1. read the body (a declared length within the body limit; anything else goes to the
   app); parse and validate it with the route's own pydantic model;
2. check the gateway-signed identity and the ``inference`` scope;
3. resolve the priority (``X-Priority``, the body field, the caller's cap) and the
   ``Cache-Control`` directive;
4. run the generation (:meth:`InferenceService.stream`, the same path as every wire format)
   inside the app's own user middleware (request ids, body limit, metrics, token
   settlement) and send SSE frames as they come.

It takes only requests it can answer exactly as the FastAPI route would. Anything else —
not JSON, not streamed, invalid, unauthenticated, missing the scope — is handed to the
FastAPI app with the body replayed, so every refusal (401, 403, 422 …) and the non-streamed
answer come from the one route implementation. An error before the first event (unknown
model, backend down, queue full) is a problem+json response with its status, rendered by
the app's own exception handler; after it, a terminal ``error`` event.

A client that disconnects stops the generation: a watcher on ``receive`` cancels the
stream, which leaves the admission queue and closes the Ollama request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from inference_service.config import Settings
from inference_service.core.sse import SSE_HEADERS, chunk_events, error_problem, sse
from inference_service.models.inference import ChatRequest, GenerateRequest
from inference_service.services.admission import PriorityRequest, clamp_priority
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.requests import chat_generation, generate_generation
from inference_service.services.response_cache import CacheDirective
from switchboard_common import ProblemError
from switchboard_common.app import user_middleware_around
from switchboard_common.asgi_body import ClientDisconnected, read_body, replay_body
from switchboard_common.body_limit import declared_length
from switchboard_common.disconnect import DisconnectWatch
from switchboard_common.exception_handlers import respond_with_app_handler
from switchboard_common.identity import verify_identity
from switchboard_common.server_span import server_span

logger = logging.getLogger("switchboard.inference")

PATHS: dict[str, tuple[type[BaseModel], Callable[[Any, str, PriorityRequest], Generation]]] = {
    "/inference/chat": (ChatRequest, chat_generation),
    "/inference/generate": (GenerateRequest, generate_generation),
}
_IDENTITY = b"x-switchboard-identity"
_SIGNATURE = b"x-switchboard-signature"
_PRIORITY = b"x-priority"
_CACHE_CONTROL = b"cache-control"
_CONTENT_TYPE = b"content-type"
_GENERATION = "switchboard.generation"  # scope key: the stream taken and its service
_SSE_HEAD = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()),
]


class FastStreamPath:
    """The outermost ASGI layer: serves streamed native generations through the app's own
    middleware, hands everything else to the app's whole stack.

    Outermost, so a stream it takes does not pass Starlette's error middlewares, the
    OpenTelemetry middleware (which leaves these paths alone anyway) and FastAPI's entry
    on its way in, nor on every event it sends out: it runs through the app's user
    middleware only (request ids, body limit, metrics, token settlement; the same classes
    and order as the app's stack, see :func:`switchboard_common.app.wrap_middleware_stack`).
    A request it does not take goes to the whole stack untouched, the body replayed.
    """

    def __init__(self, app: ASGIApp, service_app: FastAPI) -> None:
        self.app = app
        self.service_app = service_app
        self.routes: dict[str, RouteContext] = {}
        settings: Settings = service_app.state.settings
        self.max_body = settings.max_body_bytes
        self.taken = user_middleware_around(service_app, self._serve_taken)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (path := scope["path"]) not in PATHS:
            await self.app(scope, receive, send)
            return
        # these paths are left out of the OpenTelemetry middleware (its per-request cost was
        # a large share of the time to first token): their server span is opened here
        with server_span(scope, path, send) as traced_send:
            if scope["method"] == "POST":
                await self._serve(scope, receive, traced_send)
            else:
                await self.app(scope, receive, traced_send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = declared_length(scope)
        if length is None or length > self.max_body:  # chunked or too large: the app's limit
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)
        except ClientDisconnected:  # the client left before sending its body: counted by
            await self.taken(scope, receive, send)  # the middleware, nothing is answered
            return
        try:
            gen = self._take(scope, body)
        except Exception:  # whatever went wrong, the route answers it as it would
            logger.exception("streaming path could not read %s; the route serves it", scope["path"])
            gen = None
        if gen is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        from inference_service.dependencies import inference_for

        service = inference_for(self.service_app)
        scope["route"] = self._route(scope["path"])  # metrics label it like the router does
        scope["app"] = self.service_app  # as Starlette sets it (the problem handler's request)
        scope[_GENERATION] = gen, service
        try:
            service.begin(gen)  # the slot is asked for now, beside the work below
        except Exception:  # then stream() asks in its turn, and reports what is wrong
            logger.exception("early admission failed for %s", scope["path"])
        try:
            await self.taken(scope, receive, send)
        finally:
            service.end(gen)

    async def _serve_taken(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The innermost app of the middleware around a taken stream."""
        taken: tuple[Generation, InferenceService] | None = scope.pop(_GENERATION, None)
        if taken is not None:
            await self._stream(*taken, scope, receive, send)

    def _route(self, path: str) -> RouteContext | None:
        """The route FastAPI would have matched (its ``path`` labels metrics)."""
        if path not in self.routes:
            for context in iter_route_contexts(self.service_app.routes):
                if context.path == path:
                    self.routes[path] = context
                    break
        return self.routes.get(path)

    def _take(self, scope: Scope, body: bytes) -> Generation | None:
        """The generation when this path can serve the request exactly as the route would."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers, as FastAPI reads
        if not _is_json(headers.get(_CONTENT_TYPE)) or b'"stream"' not in body:
            return None
        model, build = PATHS[scope["path"]]
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            return None
        if not getattr(request, "stream", False):
            return None
        identity, signature = headers.get(_IDENTITY), headers.get(_SIGNATURE)
        if identity is None or signature is None:
            return None
        settings: Settings = self.service_app.state.settings
        secret: SecretStr = settings.internal_secret
        try:
            principal = verify_identity(
                identity.decode("latin-1"), signature.decode("latin-1"), secret
            )
        except ProblemError:
            return None
        if not principal.has_scope("inference"):
            return None
        raw_priority = headers.get(_PRIORITY)
        requested = None if raw_priority is None else clamp_priority(raw_priority.decode("latin-1"))
        cap = settings.priority_cap(principal.tier, principal.role)
        priority = PriorityRequest.for_principal(principal, requested, cap)
        gen = build(request, principal.sub, priority)
        cache_control = headers.get(_CACHE_CONTROL)
        gen.cache = CacheDirective.from_header(
            None if cache_control is None else cache_control.decode("latin-1")
        )
        return gen

    async def _stream(
        self, gen: Generation, service: InferenceService, scope: Scope, receive: Receive, send: Send
    ) -> None:
        sse_out = _SseResponse(send, receive, gen)
        chunks = service.stream(gen, sse_out.queued)
        try:
            try:
                async for chunk in chunks:
                    for name, data in chunk_events(chunk):
                        await sse_out.event(name, data)
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            if sse_out.stop_watching():  # the client left: the generation is cancelled
                return
            raise
        except Exception as exc:
            sse_out.stop_watching()
            if sse_out.started:  # after output: a terminal error event
                await sse_out.event("error", error_problem(exc))
                await sse_out.finish()
            elif isinstance(exc, ProblemError):  # before any output: a status code
                await respond_with_app_handler(self.service_app, exc, scope, receive, send)
            else:
                raise
            return
        sse_out.stop_watching()
        await sse_out.finish()


class _SseResponse:
    """The SSE response of one generation, started by its first event.

    Queue positions are sent from the admission gate's callback as they change, in the
    generation's own task: no helper task or queue stands between the backend's first
    chunk and the client. Once the first frame is out, a :class:`DisconnectWatch` cancels
    the generation when the client disconnects (while queued or while streaming).
    """

    def __init__(self, send: Send, receive: Receive, gen: Generation) -> None:
        self.send = send
        self.gen = gen
        self.started = False
        self.watch = DisconnectWatch(receive)

    async def queued(self, position: int) -> None:
        await self.event("queued", {"position": position})

    async def event(self, name: str, data: dict[str, Any]) -> None:
        if not self.started:
            self.started = True
            head = [*_SSE_HEAD, (b"x-cache", self.gen.cache_status.encode())]
            await self.send({"type": "http.response.start", "status": 200, "headers": head})
        await self.send({"type": "http.response.body", "body": sse(name, data), "more_body": True})
        self.watch.start()  # after the first frame: off the time-to-first-token path

    def stop_watching(self) -> bool:
        """Stop the watch; True when it saw the client leave."""
        return self.watch.stop()

    async def finish(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


def _is_json(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/*+json`` (parameters ignored): the media types
    FastAPI parses a body of as JSON; anything else, or none, is left to the route."""
    if content_type is None:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )
