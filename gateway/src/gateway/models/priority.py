"""Queue priorities as configured and as a client may ask for them: one digit 0..9.

Kept apart from ``core/priority.py`` (the per-request policy) so settings can validate
``GATEWAY_PRIORITY_DEFAULTS``/``GATEWAY_PRIORITY_CAPS`` without importing the gateway core.
"""

from __future__ import annotations

MIN_PRIORITY, MAX_PRIORITY = 0, 9
#: The only accepted spellings (ASCII bytes): int() would also take "-0", "+5", "٣", "1_0".
DIGITS = {str(n).encode(): n for n in range(MIN_PRIORITY, MAX_PRIORITY + 1)}


def parse_priority_map(text: str) -> dict[str, int]:
    """``default=5,pro=7`` → per-tier priorities; each must be an integer 0..9."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tier, _, value = part.partition("=")
        number = DIGITS.get(value.strip().encode("utf-8"))
        if not tier.strip() or number is None:
            raise ValueError(f"expected tier=priority with a priority 0..9, got {part!r}")
        result[tier.strip()] = number
    return result
