"""``/inference/ws``: chat over a WebSocket.

The client sends a chat request (the ``/inference/chat`` body) as JSON; the server answers
with ``{"type": "queued"|"token"|"usage"|"done"|"error", …}`` messages. While a reply is
streaming the client may send ``{"type": "cancel"}``: the upstream generation is cancelled
and ``{"type": "done", "done_reason": "cancelled"}`` follows. One generation at a time per
socket: a request sent while a reply is streaming is refused with an ``error`` message
whose problem has status 409 (the reply in progress goes on; cancel it first, or send the
request after ``done``/``error``). Refusing rather than queueing keeps each socket's events
unambiguous (they carry no request id) and stops a client from stacking up generations
that its priority and the admission queue would not give it. Identity: the gateway-signed
headers of the handshake (no identity / no ``inference`` scope → the handshake is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from inference_service.config import Settings
from inference_service.core.sse import native_events, ws_message
from inference_service.dependencies import inference_for
from inference_service.models.inference import ChatRequest
from inference_service.services.admission import PriorityRequest, clamp_priority
from inference_service.services.inference import Generation, InferenceService
from inference_service.services.requests import chat_generation
from inference_service.services.streaming import with_positions
from switchboard_common import ProblemError, problem_body
from switchboard_common.identity import (
    IDENTITY_HEADER,
    SIGNATURE_HEADER,
    Principal,
    verify_identity,
)

router = APIRouter(tags=["inference"])
POLICY_VIOLATION = 1008
BUSY_DETAIL = (
    "One generation at a time per socket: this request was not started. Wait for 'done', "
    'or send {"type": "cancel"} first.'
)


def _principal(websocket: WebSocket) -> Principal | None:
    value = websocket.headers.get(IDENTITY_HEADER)
    signature = websocket.headers.get(SIGNATURE_HEADER)
    if not value or not signature:
        return None
    try:
        principal = verify_identity(value, signature, websocket.app.state.settings.internal_secret)
    except ProblemError:
        return None
    return principal if principal.has_scope("inference") else None


async def _pump(
    websocket: WebSocket, service: InferenceService, gen: Generation, ended: asyncio.Event
) -> None:
    """Send a generation's events; ``ended`` is set once its last one (done/error) went out
    — from then on the socket takes the next request, even while its slot is released."""
    async for name, data in native_events(with_positions(lambda cb: service.stream(gen, cb))):
        await websocket.send_json(ws_message(name, data))
        if name in ("done", "error"):
            ended.set()


def _priority(websocket: WebSocket, principal: Principal) -> PriorityRequest:
    """The handshake's ``X-Priority`` header, clamped, and the caller's tier cap."""
    raw = websocket.headers.get("x-priority")
    settings: Settings = websocket.app.state.settings
    return PriorityRequest.for_principal(
        principal,
        None if raw is None else clamp_priority(raw),
        settings.priority_cap(principal.tier, principal.role),
    )


@router.websocket("/inference/ws")
async def chat_socket(websocket: WebSocket) -> None:
    principal = _principal(websocket)
    if principal is None:
        await websocket.close(code=POLICY_VIOLATION)
        return
    await websocket.accept()
    service = inference_for(websocket.app)
    receiver: asyncio.Task[Any] = asyncio.create_task(websocket.receive_json())
    pump: asyncio.Task[None] | None = None
    pending: Any = None  # a message that arrived as the previous reply was winding down
    try:
        while True:
            if pending is None:
                message = await receiver
                receiver = asyncio.create_task(websocket.receive_json())
            else:
                message, pending = pending, None
            if not isinstance(message, dict) or message.get("type") == "cancel":
                continue
            try:
                request = ChatRequest.model_validate(message)
            except ValidationError as exc:
                errors = [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()]
                problem = problem_body(
                    422, detail="Invalid chat request.", extensions={"errors": errors}
                )
                await websocket.send_json(ws_message("error", problem))
                continue
            gen = chat_generation(request, principal.sub, _priority(websocket, principal))
            ended = asyncio.Event()
            pump = asyncio.create_task(_pump(websocket, service, gen, ended))
            while not pump.done():
                await asyncio.wait({pump, receiver}, return_when=asyncio.FIRST_COMPLETED)
                if pump.done() or not receiver.done():
                    continue
                incoming = receiver.result()
                receiver = asyncio.create_task(websocket.receive_json())
                if ended.is_set():  # the client saw done/error: this is its next message
                    pending = incoming
                    await asyncio.wait({pump})
                elif isinstance(incoming, dict) and incoming.get("type") == "cancel":
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pump
                    await websocket.send_json({"type": "done", "done_reason": "cancelled"})
                else:
                    busy = problem_body(409, detail=BUSY_DETAIL)
                    await websocket.send_json(ws_message("error", busy))
            if not pump.cancelled():
                pump.result()
    except (WebSocketDisconnect, RuntimeError, ValueError):
        return
    finally:
        receiver.cancel()
        if pump is not None and not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
