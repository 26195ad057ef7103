"""``/api/pull`` progress: the same status sequence a real Ollama streams.

``pulling manifest`` -> per layer ``pulling <digest12>`` (``digest``, ``total``) followed by four
lines with ``completed`` at 25/50/75/100 % -> ``verifying sha256 digest`` -> ``writing manifest``
-> ``success``.  Names containing ``doesnotexist`` fail after ``pulling manifest``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .models import ModelSpec
from .wire import ndjson_line

MISSING_MARKER = "doesnotexist"
MISSING_MESSAGE = "pull model manifest: file does not exist"


def layers(spec: ModelSpec) -> list[tuple[str, int]]:
    """(digest, size) of each simulated blob of ``spec``."""
    kinds = [("model", spec.size - 9_236)]
    if not spec.is_embedding_only:
        kinds.append(("template", 1_429))
    kinds += [("license", 7_711), ("params", 96)]
    return [
        ("sha256:" + hashlib.sha256(f"{spec.name}/{kind}".encode()).hexdigest(), size)
        for kind, size in kinds
    ]


def progress(spec: ModelSpec) -> list[dict[str, Any]]:
    """Every progress object of a successful pull, in order."""
    out: list[dict[str, Any]] = [{"status": "pulling manifest"}]
    for digest, total in layers(spec):
        status = f"pulling {digest.removeprefix('sha256:')[:12]}"
        out.append({"status": status, "digest": digest, "total": total})
        for quarter in (1, 2, 3, 4):
            out.append(
                {
                    "status": status,
                    "digest": digest,
                    "total": total,
                    "completed": total * quarter // 4,
                }
            )
    out += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
    out.append({"status": "success"})
    return out


async def stream_progress(
    spec: ModelSpec | None, delay_s: Callable[[], float], on_success: Callable[[], None]
) -> AsyncIterator[bytes]:
    """NDJSON lines of a pull (``spec`` ``None`` = the manifest does not exist)."""
    if spec is None:
        yield ndjson_line({"status": "pulling manifest"})
        yield ndjson_line({"error": MISSING_MESSAGE})
        return
    items = progress(spec)
    for i, item in enumerate(items):
        if i and delay_s() > 0:
            await asyncio.sleep(delay_s())
        if item["status"] == "success":
            on_success()
        yield ndjson_line(item)
