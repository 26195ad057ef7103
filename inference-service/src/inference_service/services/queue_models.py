"""Settings, errors and snapshot schemas of the admission queue (see ``services/queue.py``).

Exception tree (all render as problem+json 503 with ``Retry-After``)::

    ServiceUnavailable (switchboard_common)   503
    └── AdmissionRejected                     503  base: the queue refused or gave up
        ├── QueueFull                         503  too many waiters at this priority
        ├── QueueWaitTimeout                  503  no slot within the wait timeout
        └── QueueUnavailable                  503  Redis unreachable: fail closed

Settings use the env prefix ``INFERENCE_QUEUE_`` (``INFERENCE_QUEUE_LEASE_S=15``, …); the
slot map is also read from ``INFERENCE_SLOTS``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from inference_service.services.model_names import normalize_model
from switchboard_common.problems import ServiceUnavailable

MIN_PRIORITY, MAX_PRIORITY = 0, 9
PRIORITIES = range(MIN_PRIORITY, MAX_PRIORITY + 1)


def parse_int_map(value: Any) -> Any:
    """``"llama3.2:latest=2,*=4"`` → ``{"llama3.2:latest": 2, "*": 4}`` (split on the last ``=``,
    since model names contain ``:``). Dicts pass through; blanks give ``{}``."""
    if not isinstance(value, str):
        return value
    result: dict[str, int] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, count = item.rpartition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=COUNT, got {item!r}")
        result[name.strip()] = int(count)
    return result


def _slot_key(name: str) -> str:
    """A slot map key with its model name normalized: ``*``, ``model`` or ``backend|model``."""
    if name == "*":
        return name
    backend, sep, model = name.rpartition("|")
    return f"{backend}{sep}{normalize_model(model)}"


class QueueSettings(BaseSettings):
    """Knobs of the Redis admission queue (env prefix ``INFERENCE_QUEUE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="INFERENCE_QUEUE_", extra="ignore", populate_by_name=True
    )

    key_prefix: str = Field(
        default="switchboard:inference:queue",
        min_length=1,
        description="Prefix of every Redis key and of the release channel of the queue.",
    )
    default_slots: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Concurrent requests per backend+model when the slot map has no entry "
        "(like OLLAMA_NUM_PARALLEL).",
    )
    slots: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("slots", "INFERENCE_QUEUE_SLOTS", "INFERENCE_SLOTS"),
        description="Slots per model or per 'backend|model', e.g. 'llama3.2:latest=2,*=4'. "
        "Lookup order: 'backend|model', 'model', '*', then default_slots.",
    )
    lease_s: float = Field(
        default=15.0,
        gt=0,
        description="Lifetime of a slot lease (s). Holders renew it every lease_s/3; the "
        "slots of a crashed replica come back after at most this long.",
    )
    aging_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds of waiting worth one priority level: effective priority = "
        "priority + waited_s / aging_s, so low priority never starves.",
    )
    max_waiting: int = Field(
        default=100,
        ge=0,
        description="Waiters allowed per priority level per backend+model; more get 503.",
    )
    max_waiting_by_priority: Annotated[dict[int, int], NoDecode] = Field(
        default_factory=dict,
        description="Per-priority overrides of max_waiting, e.g. '0=20,9=500'.",
    )
    wait_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest time a request waits for a slot before it gets 503.",
    )
    poll_interval_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="Poll fallback of a waiter (s; ±20% jitter). Releases also wake waiters "
        "at once through Redis pub/sub.",
    )
    waiter_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="A waiting entry not refreshed for this long (its replica died) is "
        "dropped from the queue. Must exceed poll_interval_s by far.",
    )
    retry_after_s: int = Field(
        default=5, ge=1, description="Retry-After (s) sent with a 503 from the queue."
    )

    @field_validator("slots", mode="before")
    @classmethod
    def _parse_slots(cls, value: Any) -> Any:
        parsed = parse_int_map(value)
        if isinstance(parsed, dict):  # 'llama3.2=2' is the slot count of llama3.2:latest
            return {_slot_key(str(name)): count for name, count in parsed.items()}
        return parsed

    @field_validator("max_waiting_by_priority", mode="before")
    @classmethod
    def _parse_max_waiting(cls, value: Any) -> Any:
        parsed = parse_int_map(value)
        if isinstance(parsed, dict):
            return {int(k): v for k, v in parsed.items()}
        return parsed

    def capacity(self, backend: str, model: str) -> int:
        """Slots for ``backend|model``: exact key, then model, then ``*``, then the default
        (``model`` in either spelling: ``llama3.2`` is ``llama3.2:latest``)."""
        model = normalize_model(model)
        for name in (f"{backend}|{model}", model, "*"):
            if name in self.slots:
                return max(1, self.slots[name])
        return self.default_slots

    def max_waiting_for(self, priority: int) -> int:
        return self.max_waiting_by_priority.get(priority, self.max_waiting)


class QueueKeys:
    """Redis names of one backend+model queue (one Cluster hash slot)."""

    def __init__(self, prefix: str, backend: str, model: str) -> None:
        model = normalize_model(model)  # one queue per model, whichever spelling asked
        if "|" in backend or "{" in backend + model or "}" in backend + model:
            raise ValueError("backend and model must not contain '|', '{' or '}'")
        self.backend, self.model = backend, model
        self.name = f"{backend}|{model}"
        base = f"{prefix}:{{{self.name}}}"
        self.holders = f"{base}:holders"
        self.wait = f"{base}:wait"
        self.heartbeats = [f"{base}:hb:{p}" for p in PRIORITIES]

    @property
    def all(self) -> list[str]:
        return [self.holders, self.wait, *self.heartbeats]


class AdmissionRejected(ServiceUnavailable):
    """The queue refused a request or gave up on it (503 with Retry-After)."""


class QueueFull(AdmissionRejected):
    slug = "queue-full"
    title = "Queue Full"


class QueueWaitTimeout(AdmissionRejected):
    slug = "queue-timeout"
    title = "Queue Wait Timeout"


class QueueUnavailable(AdmissionRejected):
    slug = "queue-unavailable"
    title = "Queue Unavailable"


class QueueKeySnapshot(BaseModel):
    """One backend+model queue, as every replica sees it (live leases and waiters only)."""

    backend: str = Field(description="Ollama backend the slots belong to.")
    model: str
    in_use: int = Field(ge=0, description="Slots held now (unexpired leases).")
    capacity: int = Field(ge=1, description="Slots configured on this replica.")
    waiting: int = Field(ge=0, description="Requests waiting, all priorities.")
    waiting_by_priority: dict[int, int] = Field(
        description="Waiting requests per priority 0..9 (9 is most urgent)."
    )

    @classmethod
    def from_counts(
        cls, backend: str, model: str, capacity: int, counts: list[int]
    ) -> QueueKeySnapshot:
        """From the SNAPSHOT script's reply: ``[holders, waiters at 0, …, waiters at 9]``."""
        by_priority = dict(zip(PRIORITIES, counts[1:], strict=True))
        return cls(
            backend=backend,
            model=model,
            in_use=counts[0],
            capacity=capacity,
            waiting=sum(by_priority.values()),
            waiting_by_priority=by_priority,
        )


class QueueSnapshot(BaseModel):
    """Depth of every admission queue known to Redis."""

    queues: list[QueueKeySnapshot]
