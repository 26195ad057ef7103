"""A rate limit as configured: a count per window (``60/minute``, ``10/s``, ``100/30s``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
          "hour": 3600, "d": 86400, "day": 86400}  # fmt: skip
_LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Limit:
    count: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``60/minute``, ``10/s``, ``1000/hour``, ``100/30s``."""
        match = _LIMIT.match(text.lower())
        if not match or match.group(3) not in _UNITS:
            raise ValueError(f"not a rate limit: {text!r} (write e.g. '60/minute' or '10/s')")
        count, multiple, unit = int(match.group(1)), match.group(2), match.group(3)
        return cls(count, (int(multiple) if multiple else 1) * _UNITS[unit])


def parse_limits(text: str) -> dict[str, Limit]:
    """``free=60/minute,pro=600/minute`` → per-tier limits (``0`` or ``none``: unlimited)."""
    limits: dict[str, Limit] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not value:
            raise ValueError(f"expected tier=limit, got {part!r}")
        if value.strip().lower() in ("0", "none", "unlimited"):
            continue
        limits[name.strip()] = Limit.parse(value)
    return limits
