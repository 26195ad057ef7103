"""``InferenceService``: the one generation path behind every wire format.

pick a backend that has the model → validate against it (``num_ctx``) → admission gate
(queue seam) → Ollama call with breaker accounting → usage ledger on completion.
Deterministic requests are first looked up in the response cache (docs/caching.md): a hit
is replayed as Ollama-shaped chunks without a backend, a queue slot or a backend call.
Every route (native SSE/JSON, /v1, /api, WebSocket) converts the Ollama-shaped dicts this
yields into its own format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from inference_service.core.deferred import Deferred
from inference_service.services.admission import AdmissionEntry, AdmissionGate, PositionCallback
from inference_service.services.backends import Backend, BackendPool
from inference_service.services.errors import ModelNotFound, OllamaUnavailable
from inference_service.services.response_cache import (
    CacheDirective,
    CacheStatus,
    Lookup,
    ResponseCache,
)
from inference_service.services.usage import UsageLedger
from switchboard_common import PayloadTooLarge, UnprocessableContent

Kind = Literal["chat", "generate"]
JsonDict = dict[str, Any]


@dataclass
class Generation:
    """One generation request in Ollama's shape, plus who asks and how urgently."""

    kind: Kind
    body: JsonDict
    user: str
    priority: int = 5
    cache: CacheDirective = field(default_factory=CacheDirective)
    cache_status: CacheStatus = "MISS"  # set by InferenceService: HIT / MISS / BYPASS
    early: EarlyAdmission | None = field(default=None, repr=False)  # InferenceService.begin

    @property
    def model(self) -> str:
        return str(self.body["model"])


@dataclass(frozen=True, slots=True)
class EarlyAdmission:
    """The backend :meth:`InferenceService.begin` picked and its admission entry."""

    backend: Backend
    entry: AdmissionEntry


def prompt_bytes(body: JsonDict) -> int:
    """UTF-8 size of the text a request sends to the model."""
    parts = [body.get("prompt"), body.get("system"), body.get("suffix")]
    parts += [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
    return sum(len(p.encode()) for p in parts if isinstance(p, str))


class InferenceService:
    """Generations and embeddings across the backend pool."""

    def __init__(
        self,
        pool: BackendPool,
        admission: AdmissionGate,
        ledger: UsageLedger,
        max_prompt_bytes: int,
        cache: ResponseCache | None = None,
    ) -> None:
        self.pool = pool
        self.admission = admission
        self.ledger = ledger
        self.max_prompt_bytes = max_prompt_bytes
        self.cache = cache

    def _check_size(self, size: int) -> None:
        if size > self.max_prompt_bytes:
            raise PayloadTooLarge(
                f"The prompt is {size} bytes; the limit is {self.max_prompt_bytes}.",
                limit_bytes=self.max_prompt_bytes,
            )

    async def _failover(self, model: str, failed: set[str], error: OllamaUnavailable) -> Backend:
        """Another backend with ``model`` after ``failed`` ones were unavailable, else ``error``."""
        try:
            return await self.pool.pick(model, frozenset(failed))
        except (ModelNotFound, OllamaUnavailable):
            raise error from None

    def begin(self, gen: Generation) -> None:
        """Ask the admission gate for ``gen``'s slot now (:meth:`AdmissionGate.enter`), so
        the round trip runs beside the caller's remaining work, when nothing on the way to
        it needs to wait: no response-cache lookup (BYPASS), no context-length check (no
        ``options.num_ctx``), a prompt within the limit and fresh model lists. Otherwise
        :meth:`stream` does it all in order, as without this. The caller calls :meth:`end`
        once the stream is over."""
        if gen.early is not None or (
            self.cache is not None and not ResponseCache.bypasses(gen.body, gen.cache)
        ):
            return
        options = gen.body.get("options")
        if isinstance(options, dict) and "num_ctx" in options:
            return
        if prompt_bytes(gen.body) > self.max_prompt_bytes:
            return
        backend = self.pool.pick_now(gen.model)
        if backend is None:
            return
        entry = self.admission.enter(backend.name, gen.model, gen.priority)
        if entry is not None:
            gen.early = EarlyAdmission(backend, entry)

    def end(self, gen: Generation) -> None:
        """Give up the early entry of a stream that failed before it used it."""
        early, gen.early = gen.early, None
        if early is not None:
            self.admission.abandon(early.entry)

    async def _prepare(self, gen: Generation, failed: set[str] | None = None) -> Backend:
        """The backend for ``gen`` (its prompt size was checked by :meth:`_lookup`)."""
        backend = await self.pool.pick(gen.model, frozenset(failed or ()))
        num_ctx = (gen.body.get("options") or {}).get("num_ctx")
        if isinstance(num_ctx, int):
            async with self.pool.use(backend):
                limit = await self.pool.context_length(backend, gen.model)
            if limit is not None and num_ctx > limit:
                raise UnprocessableContent(
                    f"options.num_ctx {num_ctx} exceeds the context length of "
                    f"'{gen.model}' ({limit}).",
                    errors=[{"loc": ["body", "options", "num_ctx"], "msg": f"max {limit}"}],
                )
        return backend

    async def _record(self, gen: Generation, final: JsonDict) -> None:
        await self.ledger.record(
            gen.user,
            gen.model,
            int(final.get("prompt_eval_count") or 0),
            int(final.get("eval_count") or 0),
        )

    async def _lookup(self, gen: Generation) -> Lookup:
        """The response-cache outcome (sets ``gen.cache_status``); 413 for a prompt over
        the limit (checked once here, not again per backend tried)."""
        self._check_size(prompt_bytes(gen.body))
        if self.cache is None:
            gen.cache_status = "BYPASS"
            return Lookup("BYPASS")
        lookup = await self.cache.lookup(self.pool, gen.kind, gen.body, gen.cache)
        gen.cache_status = lookup.status
        return lookup

    async def _record_hit(self, gen: Generation, final: JsonDict) -> None:
        if self.cache is not None:
            await self.cache.record_usage(self.ledger, gen.user, gen.model, final)

    async def complete(self, gen: Generation) -> JsonDict:
        """A whole (non-streamed) answer in Ollama's shape."""
        lookup = await self._lookup(gen)
        if lookup.hit is not None:
            await self._record_hit(gen, lookup.hit.final)
            return lookup.hit.whole(gen.kind, gen.model)
        failed: set[str] = set()
        while True:
            backend = await self._prepare(gen, failed)
            try:
                async with (
                    self.admission.admit(backend.name, gen.model, gen.priority, None),
                    self.pool.use(backend),
                ):
                    call = backend.client.chat if gen.kind == "chat" else backend.client.generate
                    result = await call(gen.body)
            except OllamaUnavailable as exc:
                failed.add(backend.name)
                await self._failover(gen.model, failed, exc)
                continue
            await self._record(gen, result)
            if self.cache is not None and lookup.recorder is not None:
                await self.cache.store_whole(lookup.recorder, result)
            return result

    async def stream(
        self, gen: Generation, on_position: PositionCallback | None = None
    ) -> AsyncIterator[JsonDict]:
        """Ollama chunks as they arrive; usage is recorded before the final chunk.

        A backend that is unavailable before the first chunk is failed over to another one
        that has the model; after the first chunk nothing is retried. A cache hit is replayed
        chunk by chunk; a miss is stored only once its final chunk arrived.
        """
        lookup = await self._lookup(gen)
        if lookup.hit is not None:
            *pieces, final = lookup.hit.chunks(gen.kind, gen.model)
            for chunk in pieces:
                yield chunk
            await self._record_hit(gen, final)
            yield final
            return
        recorder = lookup.recorder
        failed: set[str] = set()
        while True:
            early, gen.early = gen.early, None  # the first attempt's, from begin()
            backend = await self._prepare(gen, failed) if early is None else early.backend
            started = False
            # the Ollama request is encoded while the admission queue's Redis call is in
            # flight (nothing is sent before the slot is granted): docs/inference.md
            call = Deferred(partial(backend.client.prepare_stream, gen.kind, gen.body))
            entry = None if early is None else early.entry
            try:
                async with (
                    self.admission.admit(backend.name, gen.model, gen.priority, on_position, entry),
                    self.pool.use(backend),
                ):
                    async for chunk in call.result()():
                        started = True
                        if recorder is not None:
                            recorder.add(chunk)
                        if chunk.get("done"):
                            await self._record(gen, chunk)
                            if self.cache is not None and recorder is not None:
                                await self.cache.store(recorder, chunk)
                        yield chunk
                return
            except OllamaUnavailable as exc:
                if started:
                    raise
                failed.add(backend.name)
                await self._failover(gen.model, failed, exc)

    async def embed(self, user: str, body: JsonDict, priority: int = 5) -> JsonDict:
        """``/api/embed`` result; ``prompt_eval_count`` is recorded as prompt tokens."""
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        self._check_size(sum(len(t.encode()) for t in texts if isinstance(t, str)))
        model = str(body["model"])
        failed: set[str] = set()
        while True:
            backend = await self.pool.pick(model, frozenset(failed))
            try:
                async with (
                    self.admission.admit(backend.name, model, priority, None),
                    self.pool.use(backend),
                ):
                    result = await backend.client.embed(body)
                break
            except OllamaUnavailable as exc:
                failed.add(backend.name)
                await self._failover(model, failed, exc)
        await self.ledger.record(user, model, int(result.get("prompt_eval_count") or 0), 0)
        return result
