"""The rate-limit grammar: a count per window (``60/minute``, ``10/s``, ``100/30s``).

It lives here, not in the gateway, because two services must agree on it: the gateway
enforces limits (``GATEWAY_RATE_LIMITS`` per tier, and a user's override carried in the
token), and the auth service validates the per-user override an admin sets, so a value it
stores is always one the gateway can enforce.

Grammar: ``<count>/<window>`` where window is ``[<n>]<unit>`` and unit is one of
s/sec/second, m/min/minute, h/hour, d/day (case-insensitive, spaces allowed around the
parts). A per-user override may also be ``unlimited`` (or ``none``/``0``): no limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
         "hour": 3600, "d": 86400, "day": 86400}  # fmt: skip
UNLIMITED = frozenset({"0", "none", "unlimited"})
MAX_COUNT = 1_000_000_000
MAX_WINDOW_S = 366 * 86400
MAX_LIMIT_TEXT = 32  # longest override a token or identity header carries

# ASCII digits only: ``\d`` would accept other scripts' digits, which int() then parses.
_LIMIT = re.compile(r"^\s*([0-9]{1,10})\s*/\s*([0-9]{0,7})\s*([a-z]+)\s*$", re.ASCII)


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``60/minute``, ``10/s``, ``1000/hour``, ``100/30s``; ValueError otherwise."""
        match = _LIMIT.match(text.lower())
        if not match or match.group(3) not in UNITS:
            raise ValueError(f"not a rate limit: {text!r} (write e.g. '60/minute' or '10/s')")
        count, multiple, unit = int(match.group(1)), match.group(2), match.group(3)
        window = (int(multiple) if multiple else 1) * UNITS[unit]
        if count > MAX_COUNT or not 0 < window <= MAX_WINDOW_S:
            raise ValueError(
                f"rate limit out of range: {text!r} (at most {MAX_COUNT} per window, "
                "windows from 1 s to 366 days)"
            )
        return cls(count, window)


def parse_limits(text: str) -> dict[str, Limit | None]:
    """``free=60/minute,pro=600/minute`` → per-tier limits; ``None`` (written ``0`` or
    ``none``) is unlimited. A tier listed as unlimited stays in the map, so it is not
    mistaken for an unlisted tier (which falls back to ``default``): see :func:`limit_for`."""
    limits: dict[str, Limit | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not value:
            raise ValueError(f"expected tier=limit, got {part!r}")
        limits[name.strip()] = None if value.strip().lower() in UNLIMITED else Limit.parse(value)
    return limits


def limit_for(tiers: dict[str, Limit | None], tier: str) -> Limit | None:
    """The tier's limit, else the ``default`` entry's; None: unlimited (or nothing set)."""
    return tiers[tier] if tier in tiers else tiers.get("default")


def parse_limit_override(text: str) -> Limit | None:
    """A per-user override: a :class:`Limit` of at least 1 request, or None for unlimited.

    ``0/minute`` is refused (it would lock the user out; disable the user for that).
    """
    if len(text) > MAX_LIMIT_TEXT:
        raise ValueError(f"a rate limit is at most {MAX_LIMIT_TEXT} characters")
    if text.strip().lower() in UNLIMITED:
        return None
    limit = Limit.parse(text)
    if limit.count < 1:
        raise ValueError(
            f"rate limit {text!r} allows no request; use at least 1 (or disable the user)"
        )
    return limit


def normalize_limit_override(text: str) -> str:
    """The spelling stored and put in tokens: validated, lower-case, without spaces
    (`` 300 / Minute`` → ``300/minute``); anything meaning no limit → ``unlimited``."""
    if parse_limit_override(text) is None:
        return "unlimited"
    return "".join(text.lower().split())
