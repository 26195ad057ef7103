"""M1: how much slower this machine runs the same Python work right after an idle moment.

A streamed request wakes every process on its path from idle (client, gateway, inference,
Redis, the simulator). On the 2-core VMs this project is benched on, code that has just
woken runs many times slower than the same code run back to back — caches and branch
predictors start cold after the core idled — so S1's added time is the *cold* CPU cost of
the two extra hops, not what a microbenchmark of the same functions would suggest
(docs/benchmarks.md, S1). This row measures that factor in the same run, so S1 can be read
against the machine it ran on.

The work is one hop's worth of request handling in miniature: validate a chat body with a
pydantic model, serialise it again and sign it with an HMAC. It runs ``5 * samples`` times
back to back (warm), then ``samples`` times each after ``idle_s`` of sleep (cold); the row
is the ratio of the medians. It runs before the bench stack starts, on a quiet machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import statistics
import time
from dataclasses import dataclass

from pydantic import BaseModel, Field

_BODY = json.dumps(
    {
        "model": "llama3.2:latest",
        "messages": [{"role": "user", "content": "hello there 3"}],
        "options": {"num_predict": 12, "temperature": 0.7},
        "stream": True,
    }
).encode()
_KEY = b"m1-calibration-key-32-bytes-long"


class _Message(BaseModel):
    role: str
    content: str


class _Chat(BaseModel):
    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    options: dict[str, float | int] = Field(default_factory=dict)
    stream: bool = False


@dataclass(frozen=True)
class ColdStart:
    warm_us: float  # median µs of the work run back to back
    cold_us: float  # median µs of the same work right after ``idle_s`` of sleep
    idle_s: float

    @property
    def factor(self) -> float:
        return self.cold_us / self.warm_us


def _work() -> int:
    chat = _Chat.model_validate_json(_BODY)
    payload = chat.model_dump_json().encode()
    return len(hmac.new(_KEY, payload, hashlib.sha256).digest())


def _timed() -> float:
    start = time.perf_counter()
    _work()
    return (time.perf_counter() - start) * 1e6


def cold_start(samples: int = 40, idle_s: float = 0.01) -> ColdStart:
    """Medians of the work run warm and right after ``idle_s`` of sleep (see module doc)."""
    for _ in range(5):  # imports, pydantic's first-use setup
        _work()
    warm = [_timed() for _ in range(samples * 5)]
    cold = []
    for _ in range(samples):
        time.sleep(idle_s)
        cold.append(_timed())
    return ColdStart(statistics.median(warm), statistics.median(cold), idle_s)
