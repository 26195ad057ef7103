"""Test helpers shared by the test modules (the ``Sim`` handle on a running simulator)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest


@dataclass
class Sim:
    base_url: str
    client: httpx.Client
    stdout_path: Path

    def config(self, **knobs: Any) -> dict[str, Any]:
        r = self.client.post("/_sim/config", json=knobs)
        assert r.status_code == 200, r.text
        config: dict[str, Any] = r.json()
        return config

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.client.get("/_sim/stats").json()
        return stats

    def wait_stats(self, predicate: Any, timeout: float = 2.0) -> dict[str, Any]:
        """Poll ``/_sim/stats`` until ``predicate(stats)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while not predicate(stats):
            if time.monotonic() > deadline:
                pytest.fail(f"stats condition not met within {timeout}s: {stats}")
            time.sleep(0.02)
            stats = self.stats()
        return stats


def stream_ndjson(
    client: httpx.Client, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, list[tuple[float, dict[str, Any]]]]:
    """POST ``body`` and collect every NDJSON line with its arrival time (monotonic s)."""
    import json

    out: list[tuple[float, dict[str, Any]]] = []
    with client.stream("POST", path, json=body) as r:
        for line in r.iter_lines():
            if line:
                out.append((time.monotonic(), json.loads(line)))
    return r, out
