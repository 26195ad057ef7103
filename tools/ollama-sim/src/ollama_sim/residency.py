"""Which models are "loaded" (``/api/ps``) and the ``keep_alive`` rule.

A model becomes loaded when an inference request first uses it and stays loaded for its
``keep_alive`` (default 5 minutes, negative = forever, ``0`` = unload when the request ends).
Expiry is checked lazily whenever the registry is read.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from .models import ModelSpec

DEFAULT_KEEP_ALIVE_S = 300.0
FOREVER_S = float("inf")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
# Go's zero time + what Ollama shows for "forever" is far in the future; pick a fixed date.
_FOREVER_AT = datetime(2318, 1, 1, tzinfo=UTC)


def parse_keep_alive(value: float | str | None) -> float:
    """Convert an Ollama ``keep_alive`` value to seconds (``inf`` for negative values).

    Numbers are seconds; strings are Go durations (``"5m"``, ``"1h30m"``, ``"300ms"``) or bare
    numbers of seconds.  Raises ``ValueError`` with Go's message for anything else.
    """
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {value!r}")
    seconds = float(value) if isinstance(value, int | float) else _parse_go_duration(value.strip())
    return FOREVER_S if seconds < 0 else seconds


def _parse_go_duration(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def rfc3339(ts: float) -> str:
    """Local-time RFC 3339 timestamp, the way Ollama prints ``expires_at``."""
    return datetime.fromtimestamp(ts).astimezone().isoformat()


class Residency:
    """Registry of loaded models: name -> (spec, expiry as a wall-clock timestamp)."""

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[ModelSpec, float]] = {}

    def _prune(self) -> None:
        now = time.time()
        for name in [n for n, (_, exp) in self._loaded.items() if exp <= now]:
            del self._loaded[name]

    def is_loaded(self, name: str) -> bool:
        self._prune()
        return name in self._loaded

    def touch(self, spec: ModelSpec, keep_alive_s: float) -> None:
        """Mark ``spec`` loaded until ``keep_alive_s`` from now (``0`` unloads it)."""
        if keep_alive_s <= 0:
            self._loaded.pop(spec.name, None)
            return
        expiry = FOREVER_S if keep_alive_s == FOREVER_S else time.time() + keep_alive_s
        self._loaded[spec.name] = (spec, expiry)

    def unload(self, name: str) -> None:
        self._loaded.pop(name, None)

    def clear(self) -> None:
        self._loaded.clear()

    def ps(self) -> list[dict[str, Any]]:
        """The ``models`` list of ``/api/ps``."""
        self._prune()
        out: list[dict[str, Any]] = []
        for spec, expiry in self._loaded.values():
            expires_at = (
                _FOREVER_AT.astimezone().isoformat() if expiry == FOREVER_S else rfc3339(expiry)
            )
            out.append(
                {
                    "name": spec.name,
                    "model": spec.name,
                    "size": spec.size,
                    "digest": spec.digest,
                    "details": spec.details(),
                    "expires_at": expires_at,
                    "size_vram": spec.size,
                    "context_length": min(spec.context_length, 4096),
                }
            )
        return out


def utc_now_iso() -> str:
    """``created_at`` timestamp (UTC, ``Z`` suffix)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seconds_to_ns(seconds: float) -> int:
    return max(1, int(seconds * 1e9))


__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "FOREVER_S",
    "Residency",
    "parse_keep_alive",
    "rfc3339",
    "seconds_to_ns",
    "utc_now_iso",
]
