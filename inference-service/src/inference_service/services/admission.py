"""The admission seam: every generation (native, /v1, /api, WebSocket) passes through here.

Interface (implement it to replace the default)::

    class AdmissionGate(Protocol):
        def admit(self, backend: str, model: str, priority: int,
                  on_position: Callable[[int], Awaitable[None]] | None,
                  entry: AdmissionEntry | None = None,
                  ) -> AbstractAsyncContextManager[None]: ...
        def enter(self, backend: str, model: str, priority: int) -> AdmissionEntry | None: ...
        def abandon(self, entry: AdmissionEntry) -> None: ...

``admit`` returns an async context manager: entering it waits for a slot on ``backend``
(calling ``await on_position(n)`` whenever the caller's queue position changes, so a
route can emit ``queued`` events); exiting releases the slot — also when the client
disconnects (``CancelledError``) or the generation fails. ``priority`` is 0 (lowest) .. 9.
Raise a ``ProblemError`` (e.g. ``TooManyRequests``) to refuse admission. ``enter`` may
send the request for a slot early (the streaming path does it before its remaining CPU
work); a gate that cannot returns None.

:class:`UnboundedAdmission` admits at once. The Redis-backed queue replaces it by setting
``app.state.admission`` in the lifespan; routes get it through ``AdmissionDep``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from switchboard_common.identity import Principal

PositionCallback = Callable[[int], Awaitable[None]]
MIN_PRIORITY, MAX_PRIORITY, DEFAULT_PRIORITY = 0, 9, 5


def clamp_priority(value: int | str | None, default: int = DEFAULT_PRIORITY) -> int:
    """Priority from a body field or ``X-Priority`` header, clamped to 0..9."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return max(MIN_PRIORITY, min(MAX_PRIORITY, number))


@dataclass(frozen=True, slots=True)
class PriorityRequest:
    """What a caller asked for (``X-Priority``, or None), the most it may use, and what it
    gets when it asks for nothing.

    Through the gateway, ``X-Priority`` is always present: the gateway computed it (the
    client's ask, else the API key's priority, else the tier's default, capped). The cap
    here is defence in depth, and the only cap for a body ``priority`` field.
    """

    requested: int | None = None
    cap: int = MAX_PRIORITY
    default: int = DEFAULT_PRIORITY

    def resolve(self, body_priority: int | None) -> int:
        """The body field wins over the header; the cap always applies."""
        wanted = clamp_priority(
            body_priority if body_priority is not None else self.requested, self.default
        )
        return min(wanted, self.cap)

    @classmethod
    def for_principal(
        cls, principal: Principal, requested: int | None, tier_cap: int
    ) -> PriorityRequest:
        """Capped by the principal's own ``max_priority`` (an admin override the gateway
        signed) when it has one, else by ``tier_cap`` (``INFERENCE_PRIORITY_CAPS``); an API
        key's ``priority`` is the default when nothing is asked."""
        cap = principal.max_priority if principal.max_priority is not None else tier_cap
        default = principal.priority if principal.priority is not None else DEFAULT_PRIORITY
        return cls(requested, cap, min(default, cap))


def parse_priority_caps(text: str) -> dict[str, int]:
    """``default=6,pro=8`` → per-tier caps (clamped to 0..9)."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, _, value = part.partition("=")
        if not value.strip().lstrip("-").isdigit():
            raise ValueError(f"expected tier=number, got {part!r}")
        caps[tier.strip()] = clamp_priority(value.strip())
    return caps


class AdmissionEntry:
    """A gate's request for a slot made ahead of :meth:`AdmissionGate.admit` (base class;
    each gate has its own)."""

    __slots__ = ()


class AdmissionGate(Protocol):
    """Decides when a generation may start on a backend."""

    def admit(
        self,
        backend: str,
        model: str,
        priority: int,
        on_position: PositionCallback | None,
        entry: AdmissionEntry | None = None,
    ) -> AbstractAsyncContextManager[None]: ...

    def enter(self, backend: str, model: str, priority: int) -> AdmissionEntry | None:
        """Ask for the slot now, without yielding to the event loop, so the asking runs
        beside the caller's remaining work; ``admit(..., entry=...)`` then waits for the
        answer. None when the gate cannot (the caller just calls ``admit``)."""
        ...

    def abandon(self, entry: AdmissionEntry) -> None:
        """Give up an entry that ``admit`` never took (the request failed before it)."""
        ...


class UnboundedAdmission:
    """Admits every request immediately (no queue); the default until the queue is wired."""

    def admit(
        self,
        backend: str,
        model: str,
        priority: int,
        on_position: PositionCallback | None,
        entry: AdmissionEntry | None = None,
    ) -> AbstractAsyncContextManager[None]:
        return _admitted()

    def enter(self, backend: str, model: str, priority: int) -> AdmissionEntry | None:
        return None

    def abandon(self, entry: AdmissionEntry) -> None:
        """Nothing was asked for."""


@asynccontextmanager
async def _admitted() -> AsyncIterator[None]:
    yield
