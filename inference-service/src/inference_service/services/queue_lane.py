"""Per-queue state built once, and the admission span, kept off the time-to-first-token path.

Every streamed generation asks the queue for a slot before its first token, so whatever the
queue does between being asked and sending its Redis call — and between the answer and
handing over to the Ollama call — adds to that time (docs/queue.md#latency). Two things
that were per-request work there now are not:

- :class:`Lane`: the Redis keys, the capacity and the labelled metric children of one
  backend+model, built on the first request for it (a ``labels()`` lookup takes a lock and
  builds a tuple per call);
- :class:`AdmissionSpan`: the ``inference.admission`` span is created and ended in one go
  once the caller has sent its Ollama request (:class:`~inference_service.core.deferred.
  Deferred` work), with the start and end times taken where the old ``with`` block took
  them, so traces show the same interval. (Created while the Redis reply was in flight, it
  made that reply wait: an SDK span costs more than the round trip on a busy machine.)
- :class:`QueueEntry`: an enqueue call sent before the request's remaining CPU work
  (:meth:`~inference_service.services.queue.RedisAdmissionQueue.enter`), so the round trip
  runs beside that work instead of after it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from inference_service.services.admission import AdmissionEntry
from inference_service.services.queue_metrics import QueueMetrics
from inference_service.services.queue_models import QueueKeys, QueueSettings
from switchboard_common.lean_redis import Arg, PendingReply
from switchboard_common.lean_trace import AttributeValue
from switchboard_common.server_span import start_child_span


class Lane:
    """One backend+model queue: its keys, capacity and metric children (built once)."""

    __slots__ = (
        "_admitted",
        "_metrics",
        "capacity",
        "holding",
        "keys",
        "redis_keys",
        "wait_seconds",
        "waiting",
    )

    def __init__(self, settings: QueueSettings, backend: str, model: str, metrics: QueueMetrics):
        self.keys = QueueKeys(settings.key_prefix, backend, model)
        self.redis_keys = self.keys.all
        self.capacity = settings.capacity(backend, model)
        self.waiting = metrics.waiting.labels(backend)
        self.holding = metrics.holding.labels(backend)
        self.wait_seconds = metrics.wait_seconds.labels(backend)
        self._metrics = metrics
        self._admitted: dict[int, Any] = {}

    def admitted(self, priority: int) -> Any:
        """The ``admitted_total{backend, priority}`` child (priorities are 0..9)."""
        child = self._admitted.get(priority)
        if child is None:
            child = self._metrics.admitted.labels(self.keys.backend, str(priority))
            self._admitted[priority] = child
        return child


class AdmissionSpan:
    """``inference.admission`` with explicit times: :meth:`close` creates and ends it later
    than the moments it records (``started`` at construction, ``ended`` by
    :meth:`mark_end`). Never current: nothing inside it makes spans of its own when the
    queue's Lua calls go over the lean Redis client (with redis-py, its command spans are
    children of the caller's span instead).

    A lean span (:func:`~switchboard_common.server_span.start_child_span`: ~10 µs where an
    SDK span cost ~60, in the window where the backend computes the first token), child of
    the span current at construction, exported by the process's lean exporter. An error is
    recorded as its ERROR status with the exception's type and message; unlike the SDK's
    ``record_exception``, without an ``exception`` event."""

    __slots__ = ("_attributes", "_context", "ended", "started")

    def __init__(self, backend: str, model: str, priority: int, started: int | None = None) -> None:
        self.started = time.time_ns() if started is None else started
        self.ended: int | None = None
        self._context = otel_context.get_current()  # the caller's span is the parent
        self._attributes: dict[str, AttributeValue] = {
            "inference.backend": backend,
            "gen_ai.request.model": model,
            "inference.priority": priority,
        }

    def mark_end(self) -> None:
        self.ended = time.time_ns()

    def close(self, error: BaseException | None = None) -> None:
        """Record the span; an ``Exception`` sets the ERROR status ``start_as_current_span``
        would set (a ``CancelledError`` is not an error)."""
        span = start_child_span(
            "inference.admission", self._attributes, start_ns=self.started, context=self._context
        )
        if isinstance(error, Exception):
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(self.ended if self.ended is not None else time.time_ns())


@dataclass(slots=True)
class QueueEntry(AdmissionEntry):
    """One holder's place in a queue, from the moment its wait starts: what
    :meth:`RedisAdmissionQueue.admit` waits with. ``pending``: its enqueue call, when
    :meth:`RedisAdmissionQueue.enter` already sent it (an entry ``admit`` never takes is
    undone by :meth:`RedisAdmissionQueue.abandon`); None: ``admit`` sends it."""

    lane: Lane
    priority: int
    holder_id: str
    args: list[Arg]
    pending: PendingReply | None
    started: float  # time.monotonic(): the wait's start
    started_ns: int  # time.time_ns(): the admission span's start
    wake: asyncio.Event  # the release notifier's event and count when it was sent
    seen: int
