"""The queue priority of an inference request, decided at the edge and forwarded upstream.

Effective priority (0 lowest .. 9 highest) =

    min(asked, cap)   where
    asked = the client's ``X-Priority`` header, if sent
            else the API key's own priority (set at key creation), if any
            else the tier's default (``GATEWAY_PRIORITY_DEFAULTS``)
    cap   = the user's ``max_priority`` (admin override, carried in the token or the
            API-key answer), else 9 for admins, else the tier's cap (``GATEWAY_PRIORITY_CAPS``)

The result replaces whatever ``X-Priority`` the client sent (``core/headers.py`` drops the
client's) on the way to the inference service, whose admission queue orders by it; the
inference service caps again from the signed identity (defence in depth).

``X-Priority`` must be one ASCII digit 0..9 (spaces around it allowed); anything else —
``banana``, ``10``, ``-1``, ``1e309``, ``-0``, ``٣`` (an Arabic-Indic three), several
differing headers — is refused with a 400 problem naming the range, rather than silently
guessed at: a client that asks for a priority should learn that the ask was not
understood. An empty header counts as not sent. A valid ask above the cap is lowered to
the cap without an error (the caller may not know its cap).

Cost: one scan of the request headers and a few dict lookups, inference routes only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.core.security import Decision
from gateway.models.priority import DIGITS, MAX_PRIORITY, MIN_PRIORITY, parse_priority_map
from switchboard_common.identity import Principal

if TYPE_CHECKING:
    from starlette.types import Scope

    from gateway.config import Settings

PRIORITY_HEADER = b"x-priority"
SERVICES = frozenset({"inference"})  # the only service with a queue that reads it
INVALID_PRIORITY = (
    f"X-Priority must be one whole number from {MIN_PRIORITY} (lowest) to {MAX_PRIORITY} "
    "(highest), sent once; omit it to use your default."
)
_HEADERS = {n: (PRIORITY_HEADER, str(n).encode()) for n in DIGITS.values()}


class InvalidPriority(ValueError):
    """The client's ``X-Priority`` is not one digit 0..9."""


def requested_priority(scope: Scope) -> int | None:
    """The client's ``X-Priority`` (None when absent or empty); raises InvalidPriority."""
    found: int | None = None
    for name, raw in scope["headers"]:
        if name != PRIORITY_HEADER:
            continue
        value = raw.strip()
        if not value:
            continue
        number = DIGITS.get(value)
        if number is None or (found is not None and found != number):
            raise InvalidPriority(INVALID_PRIORITY)
        found = number
    return found


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    defaults: dict[str, int]
    caps: dict[str, int]

    @classmethod
    def from_settings(cls, settings: Settings) -> PriorityPolicy:
        return cls(
            parse_priority_map(settings.priority_defaults),
            parse_priority_map(settings.priority_caps),
        )

    def cap(self, principal: Principal) -> int:
        if principal.max_priority is not None:
            return principal.max_priority
        if principal.role == "admin":
            return MAX_PRIORITY
        return self.caps.get(principal.tier, self.caps.get("default", MAX_PRIORITY))

    def default(self, principal: Principal) -> int:
        if principal.priority is not None:
            return principal.priority
        return self.defaults.get(principal.tier, self.defaults.get("default", 5))

    def effective(self, principal: Principal, requested: int | None) -> int:
        asked = self.default(principal) if requested is None else requested
        return max(MIN_PRIORITY, min(asked, self.cap(principal)))

    def apply(self, scope: Scope, service: str, decision: Decision) -> Decision:
        """The decision with the ``X-Priority`` to forward added to its upstream headers,
        or a 400 for a malformed ask; unchanged off inference or without a caller."""
        principal = decision.principal
        if service not in SERVICES or principal is None:
            return decision
        try:
            requested = requested_priority(scope)
        except InvalidPriority as exc:
            return Decision(
                status=400,
                detail=str(exc),
                extensions={"allowed_min": MIN_PRIORITY, "allowed_max": MAX_PRIORITY},
            )
        header = _HEADERS[self.effective(principal, requested)]
        # A new list: decision.identity is the credential cache's, shared across requests.
        return decision.but(identity=[*decision.identity, header])
