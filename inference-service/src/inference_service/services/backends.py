"""Several Ollama backends: route each request to a healthy one that has the model.

* Model lists (``/api/tags``) are cached per backend and refreshed after
  ``model_refresh_interval_s`` (or at once after a pull/delete).
* Passive health: every call's outcome feeds a per-backend :class:`CircuitBreaker`.
  ``threshold`` consecutive unavailability failures open it; while open the backend gets no
  traffic; after ``cooldown_s`` one half-open probe request is let through — success closes
  the breaker, failure opens it again.
* A model known only on backends that are unavailable right now (open breaker, or its
  model list could not be fetched) is a 503 with ``Retry-After`` — it exists, it cannot be
  served yet — never a 404 (``Backend.known`` keeps the last list that was fetched).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from inference_service.services.errors import BackendNotFound, ModelNotFound, OllamaUnavailable
from inference_service.services.model_names import normalize_model
from inference_service.services.ollama import OllamaClient


class CircuitBreaker:
    """closed → (N failures) → open → (cooldown) → half-open (one probe) → closed/open.

    A probe is claimed by :meth:`allow` and settled by :meth:`success` / :meth:`failure`.
    Once it reaches the backend (:meth:`reached`, from :meth:`BackendPool.use`) it stays
    the one probe until it is settled, however long it streams. A claim that never reached
    the backend (the request was refused by the queue, or its client left first) lapses
    after another ``cooldown_s``, so the backend is tried again rather than left half-open
    with no probe allowed."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_at: float | None = None  # when the half-open probe was claimed
        self.probe_reached = False  # the claimed probe is talking to the backend

    @property
    def probing(self) -> bool:
        """A probe is out: talking to the backend, or claimed and not lapsed."""
        claimed = self.probe_at
        if claimed is None:
            return False
        return self.probe_reached or time.monotonic() - claimed < self.cooldown_s

    def reached(self) -> None:
        """A call is going to the backend: a claimed probe can no longer lapse."""
        if self.probe_at is not None:
            self.probe_reached = True

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a request go to this backend now? Claims the probe when half-open."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probe_at = time.monotonic()
            return True
        return False

    def retry_after_s(self) -> int:
        """Whole seconds until an open breaker lets a probe through (at least 1)."""
        if self.opened_at is None:
            return 1
        remaining = self.cooldown_s - (time.monotonic() - self.opened_at)
        return max(1, math.ceil(remaining))

    def success(self) -> None:
        self.failures, self.opened_at, self.probe_at = 0, None, None
        self.probe_reached = False

    def failure(self) -> None:
        self.failures += 1
        if self.probe_at is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
        self.probe_at, self.probe_reached = None, False


@dataclass
class Backend:
    """One Ollama server: its client, breaker and cached model list."""

    client: OllamaClient
    breaker: CircuitBreaker
    models: list[dict[str, Any]] = field(default_factory=list)
    fetched_at: float = float("-inf")
    contexts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    known: frozenset[str] = frozenset()  # normalised names of the last fetched list

    @property
    def name(self) -> str:
        return self.client.base_url

    def has(self, model: str) -> bool:
        """Is ``model`` in the current list? (``known`` is that list's normalised names, set
        with it on every successful fetch; a failed fetch empties ``models`` but keeps
        ``known`` for :meth:`had`.) A set lookup: this runs on every generation."""
        return bool(self.models) and normalize_model(model) in self.known

    def had(self, model: str) -> bool:
        """Was ``model`` on this backend when its list was last fetched successfully?"""
        return normalize_model(model) in self.known


class BackendPool:
    """Chooses a backend per request and records each outcome."""

    def __init__(self, backends: list[Backend], refresh_s: float) -> None:
        self.backends = backends
        self.refresh_s = refresh_s
        self._lock = asyncio.Lock()

    async def refresh(self, backend: Backend, *, force: bool = False) -> None:
        """Reload the backend's model list when stale (failures feed its breaker)."""
        if not force and not self._stale(backend):
            return
        try:
            backend.models = await backend.client.list_models()
        except OllamaUnavailable:
            backend.breaker.failure()
            backend.models, backend.fetched_at = [], float("-inf")
            return
        backend.fetched_at = time.monotonic()
        backend.known = frozenset(normalize_model(str(m.get("name", ""))) for m in backend.models)

    def invalidate(self) -> None:
        """Forget every cached model list (after pull/delete)."""
        for backend in self.backends:
            backend.fetched_at = float("-inf")

    def _stale(self, backend: Backend) -> bool:
        return time.monotonic() - backend.fetched_at >= self.refresh_s

    async def _candidates(self) -> list[Backend]:
        usable = [b for b in self.backends if b.breaker.state != "open"]
        stale = [b for b in usable if self._stale(b)]
        if stale:  # gather() makes a task per call: not on every request's path
            await asyncio.gather(*(self.refresh(b) for b in stale))
        return [b for b in usable if b.fetched_at > float("-inf")]

    async def available_models(self) -> list[str]:
        names = {str(m["name"]) for b in await self._candidates() for m in b.models}
        return sorted(names)

    async def merged_models(self) -> list[dict[str, Any]]:
        """The union of the healthy backends' ``/api/tags`` entries (first one wins)."""
        seen: dict[str, dict[str, Any]] = {}
        for backend in await self._candidates():
            for entry in backend.models:
                seen.setdefault(str(entry.get("name")), entry)
        return [seen[name] for name in sorted(seen)]

    async def pick(self, model: str, exclude: frozenset[str] = frozenset()) -> Backend:
        """The least busy healthy backend that has ``model``; 404 / 503 otherwise.

        ``exclude`` names backends that already failed this request (failover).
        """
        candidates = [b for b in await self._candidates() if b.name not in exclude]
        having = [b for b in candidates if b.has(model)]
        if not having:
            self._raise_unavailable_model(model, candidates, exclude)
            if not candidates:
                raise OllamaUnavailable("No model backend is reachable; try again shortly.")
            names = sorted({str(m["name"]) for b in candidates for m in b.models})
            raise ModelNotFound(model, names)
        backend = _least_busy_allowed(having)
        if backend is None:
            raise OllamaUnavailable("Every backend with this model is cooling down.", retry_after=5)
        return backend

    def pick_now(self, model: str) -> Backend | None:
        """What :meth:`pick` would return, without waiting and among closed breakers only
        (it never claims a half-open probe: the caller may not use what it picked): None
        when a model list is due for a refresh or no such backend can take ``model`` now
        (:meth:`pick` then refreshes, decides and reports why)."""
        usable = [b for b in self.backends if b.breaker.state != "open"]
        if any(self._stale(b) for b in usable):
            return None
        closed = [b for b in usable if b.breaker.state == "closed" and b.has(model)]
        return _least_busy_allowed(closed)

    def _raise_unavailable_model(
        self, model: str, reachable: list[Backend], exclude: frozenset[str]
    ) -> None:
        """503 + Retry-After when ``model`` lives only on backends that are down right now."""
        down = [
            b
            for b in self.backends
            if b not in reachable and b.name not in exclude and b.had(model)
        ]
        if down:
            wait = min(b.breaker.retry_after_s() for b in down)
            raise OllamaUnavailable(
                f"Model '{model}' exists but every backend that has it is unavailable right "
                "now; try again shortly.",
                retry_after=wait,
            )

    async def pull_target(self, model: str, name: str | None = None) -> Backend:
        """Where a pull of ``model`` goes: backend ``name`` (its URL) when given, else the
        healthy backend that lacks the model and holds the fewest models — pulls spread the
        catalogue instead of piling every model onto the first backend.

        An unknown ``name`` is a 404 naming the backends; an unavailable one is a 503.
        """
        if name is not None:
            wanted = name.rstrip("/")
            chosen = next((b for b in self.backends if b.name == wanted), None)
            if chosen is None:
                raise BackendNotFound(wanted, [b.name for b in self.backends])
            if chosen.breaker.state == "open":
                raise OllamaUnavailable(
                    f"Backend {wanted} is cooling down after failures; try again shortly.",
                    retry_after=chosen.breaker.retry_after_s(),
                )
            return chosen
        candidates = await self._candidates()
        ranked = sorted(candidates, key=lambda b: (b.has(model), len(b.models)))
        for backend in ranked:  # sorted() is stable: equal backends keep configured order
            if backend.breaker.allow():
                return backend
        raise OllamaUnavailable("No model backend is reachable; try again shortly.")

    async def any_backend(self) -> Backend:
        """A healthy backend for calls that need no particular model (version)."""
        for backend in self.backends:
            if backend.breaker.state != "open" and backend.breaker.allow():
                return backend
        raise OllamaUnavailable("No model backend is reachable; try again shortly.")

    def status(self) -> list[dict[str, Any]]:
        """Per-backend health for operators: breaker state, failures, cached models."""
        return [
            {
                "url": b.name,
                "breaker": b.breaker.state,
                "consecutive_failures": b.breaker.failures,
                "in_flight": b.in_flight,
                "models": sorted(str(m.get("name")) for m in b.models),
            }
            for b in self.backends
        ]

    @asynccontextmanager
    async def use(self, backend: Backend) -> AsyncIterator[Backend]:
        """Track one call: unavailability counts against the breaker, anything else heals."""
        backend.in_flight += 1
        backend.breaker.reached()
        try:
            yield backend
        except OllamaUnavailable:
            backend.breaker.failure()
            backend.fetched_at = float("-inf")
            raise
        except BaseException:
            backend.breaker.success()
            raise
        else:
            backend.breaker.success()
        finally:
            backend.in_flight -= 1

    async def context_length(self, backend: Backend, model: str) -> int | None:
        """The model's context window from ``/api/show`` ``model_info`` (cached)."""
        key = normalize_model(model)
        if key not in backend.contexts:
            info = (await backend.client.show(model)).get("model_info") or {}
            lengths = [v for k, v in info.items() if k.endswith(".context_length")]
            if not lengths or not isinstance(lengths[0], int):
                return None
            backend.contexts[key] = lengths[0]
        return backend.contexts[key]


def _least_busy_allowed(having: list[Backend]) -> Backend | None:
    """The least busy of ``having`` whose breaker lets a request through."""
    for backend in sorted(having, key=lambda b: b.in_flight):
        if backend.breaker.allow():
            return backend
    return None
