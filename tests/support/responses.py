"""Checks of HTTP answers shared by the cross-process tests and the services' own."""

from __future__ import annotations

import json
from typing import Any

import httpx


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of ``resp``, which must have ``status`` (and no traceback)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


def sse_events(text: str) -> list[tuple[str, Any]]:
    """``[(event, data)]`` of an SSE body (data parsed as JSON where it is JSON)."""
    events: list[tuple[str, Any]] = []
    for frame in text.strip().split("\n\n"):
        event, data = "message", ""
        for line in frame.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
        try:
            events.append((event, json.loads(data)))
        except ValueError:
            events.append((event, data))
    return events
