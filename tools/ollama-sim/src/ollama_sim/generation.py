"""ASGI responses for admitted inference work: queueing, streaming and cancel-on-disconnect.

Every inference response runs two tasks: the *work* (wait for a slot, then produce the answer)
and a *watcher* that waits for the ASGI ``http.disconnect`` message.  If the client goes away
first, the work task is cancelled at its current ``await`` (a token delay, the queue wait or a
send), its slot is released and the job is counted as ``cancelled`` (or ``queue_abandoned`` if it
never got a slot).  This does not rely on the server raising on writes to a closed socket
(uvicorn silently drops them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .config import FailMode
from .faults import error_after_tokens_message
from .models import ModelSpec
from .queue import QueueFull
from .residency import seconds_to_ns, utc_now_iso
from .state import SimState
from .tokens import token_ids, tokenize
from .wire import dumps, ndjson_line

_JSON_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]
_NDJSON_HEADERS = [(b"content-type", b"application/x-ndjson")]
_CHUNK_PARTS = {
    "generate": (b'","response":', b',"done":false}\n'),
    "chat": (b'","message":{"role":"assistant","content":', b'},"done":false}\n'),
}


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _sleep_until(deadline: float) -> None:
    delay = deadline - perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def _json_messages(status: int, obj: Any) -> tuple[Message, Message]:
    body = dumps(obj)
    headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body, "more_body": False},
    )


class AdmittedResponse(Response):
    """Base class: admission, disconnect watching and accounting.  Subclasses ``produce``."""

    def __init__(
        self,
        state: SimState,
        started: float,
        spec: ModelSpec,
        keep_alive_s: float,
        fault: FailMode | None,
    ) -> None:
        super().__init__(status_code=200)
        self.state = state
        self.started = started
        self.spec = spec
        self.keep_alive_s = keep_alive_s
        self.fault = fault
        self._complete = False  # set right before the last byte is sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._run(send))
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            watcher.cancel()
            raise
        if not work.done() and not self._complete:
            work.cancel()  # the client went away
        watcher.cancel()
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves (server shutdown)

    async def _run(self, send: Send) -> None:
        stats = self.state.stats
        try:
            await self.state.queue.acquire()
        except QueueFull as exc:
            stats.rejected += 1
            await self._send_json(send, 503, {"error": str(exc)})
            return
        except asyncio.CancelledError:
            stats.queue_abandoned += 1
            raise
        try:
            completed = await self.produce(send)
        except (asyncio.CancelledError, OSError):
            stats.cancelled += 1
            raise
        finally:
            self.state.queue.release()
            self.state.residency.touch(self.spec, self.keep_alive_s)
        if completed:
            stats.completed += 1

    async def produce(self, send: Send) -> bool:  # pragma: no cover - abstract
        """Send the whole response; return ``True`` if it completed normally."""
        raise NotImplementedError

    async def _send_json(self, send: Send, status: int, obj: Any) -> None:
        start, body = _json_messages(status, obj)
        await send(start)
        self._complete = True
        await send(body)

    async def _fail_after_tokens(self, send: Send) -> bool:
        """Non-streamed ``error_after_tokens``: a 500 with the failure message."""
        msg = error_after_tokens_message(self.state.config.fail_after_tokens)
        await self._send_json(send, 500, {"error": msg})
        return False

    async def _prompt_delay(self) -> None:
        first = self.state.config.first_token_delay_ms
        if first > 0:
            await asyncio.sleep(first / 1000)


@dataclass
class GenJob:
    kind: Literal["generate", "chat"]
    model: str  # the name as the client sent it (echoed back like Ollama does)
    pieces: list[str]
    done_reason: str
    prompt_eval_count: int
    context: list[int] | None  # generate only; None for chat and raw mode
    stream: bool


class GenerationResponse(AdmittedResponse):
    """``/api/generate`` and ``/api/chat`` with a non-empty prompt."""

    def __init__(
        self,
        state: SimState,
        started: float,
        spec: ModelSpec,
        keep_alive_s: float,
        fault: FailMode | None,
        job: GenJob,
    ) -> None:
        super().__init__(state, started, spec, keep_alive_s, fault)
        self.job = job

    async def produce(self, send: Send) -> bool:
        load_s = await self.state.ensure_loaded(self.spec, self.keep_alive_s)
        t_prompt = perf_counter()
        await self._prompt_delay()
        cfg = self.state.config
        delay = cfg.token_delay_ms / 1000
        failing = self.fault == "error_after_tokens"
        emit = self.job.pieces[: cfg.fail_after_tokens] if failing else self.job.pieces
        t_first = perf_counter()
        if not self.job.stream:
            if delay and len(emit) > 1:
                await asyncio.sleep((len(emit) - 1) * delay)
            if failing:
                return await self._fail_after_tokens(send)
            body = self._final("".join(emit), len(emit), load_s, t_prompt, t_first)
            await self._send_json(send, 200, body)
            return True

        await send({"type": "http.response.start", "status": 200, "headers": _NDJSON_HEADERS})
        head = b'{"model":' + dumps(self.job.model) + b',"created_at":"'
        mid, tail = _CHUNK_PARTS[self.job.kind]
        for i, piece in enumerate(emit):
            if i and delay:
                await _sleep_until(t_first + i * delay)
            elif i and not i % 32:
                await asyncio.sleep(0)  # zero delay: still let other requests (and cancel) in
            line = head + utc_now_iso().encode() + mid + dumps(piece) + tail
            await send({"type": "http.response.body", "body": line, "more_body": True})
        if failing:
            last = ndjson_line({"error": error_after_tokens_message(cfg.fail_after_tokens)})
            completed = False
        else:
            body = self._final("", len(emit), load_s, t_prompt, t_first, "".join(emit))
            last, completed = ndjson_line(body), True
        self._complete = True
        await send({"type": "http.response.body", "body": last, "more_body": False})
        return completed

    def _final(
        self,
        text: str,
        eval_count: int,
        load_s: float,
        t_prompt: float,
        t_first: float,
        full_text: str | None = None,
    ) -> dict[str, Any]:
        now = perf_counter()
        job = self.job
        body: dict[str, Any] = {"model": job.model, "created_at": utc_now_iso()}
        if job.kind == "generate":
            body["response"] = text
        else:
            body["message"] = {"role": "assistant", "content": text}
        body["done"] = True
        body["done_reason"] = job.done_reason
        if job.context is not None:
            out = text if full_text is None else full_text
            body["context"] = job.context + token_ids(tokenize(out))
        body["total_duration"] = seconds_to_ns(now - self.started)
        body["load_duration"] = seconds_to_ns(load_s)
        body["prompt_eval_count"] = job.prompt_eval_count
        body["prompt_eval_duration"] = seconds_to_ns(t_first - t_prompt)
        body["eval_count"] = eval_count
        body["eval_duration"] = seconds_to_ns(now - t_first)
        return body


class LoadResponse(AdmittedResponse):
    """Empty prompt / empty messages: load (or, with ``keep_alive: 0``, unload) the model."""

    def __init__(
        self,
        state: SimState,
        started: float,
        spec: ModelSpec,
        keep_alive_s: float,
        fault: FailMode | None,
        kind: Literal["generate", "chat"],
        model: str,
    ) -> None:
        super().__init__(state, started, spec, keep_alive_s, fault)
        self.kind = kind
        self.model = model

    async def produce(self, send: Send) -> bool:
        unload = self.keep_alive_s <= 0
        if not unload:
            await self.state.ensure_loaded(self.spec, self.keep_alive_s)
        if self.fault == "error_after_tokens":
            return await self._fail_after_tokens(send)
        body: dict[str, Any] = {"model": self.model, "created_at": utc_now_iso()}
        if self.kind == "generate":
            body["response"] = ""
        else:
            body["message"] = {"role": "assistant", "content": ""}
        body["done_reason"] = "unload" if unload else "load"
        body["done"] = True
        await self._send_json(send, 200, body)
        return True


class EmbedResponse(AdmittedResponse):
    """``/api/embed`` (with durations) and legacy ``/api/embeddings`` (without)."""

    def __init__(
        self,
        state: SimState,
        started: float,
        spec: ModelSpec,
        keep_alive_s: float,
        fault: FailMode | None,
        body: dict[str, Any],
        with_durations: bool,
    ) -> None:
        super().__init__(state, started, spec, keep_alive_s, fault)
        self.payload = body
        self.with_durations = with_durations

    async def produce(self, send: Send) -> bool:
        load_s = await self.state.ensure_loaded(self.spec, self.keep_alive_s)
        await self._prompt_delay()
        if self.fault == "error_after_tokens":
            return await self._fail_after_tokens(send)
        body = dict(self.payload)
        if self.with_durations:
            body["total_duration"] = seconds_to_ns(perf_counter() - self.started)
            body["load_duration"] = seconds_to_ns(load_s)
        await self._send_json(send, 200, body)
        return True
