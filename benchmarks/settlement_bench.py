"""U1: what the gateway spends per token-budget usage report, one per POST vs batched.

The inference service reports every budgeted generation's usage to the gateway
(``POST /gateway/internal/usage``); reports that queue up go as one signed batch
(docs/rate-limits.md). This row gets one real reservation from ``gateway-full-a`` (a chat
it budgets and forwards to the bench upstream, which echoes the reservation), then posts
the same number of reports against it (each its own ``seq``, so each is settled, as a
WebSocket's generations are) both ways — ``REPORTS`` single POSTs, then
``REPORTS / BATCH`` batches — in alternating rounds, and reads the gateway process's CPU
time (``/proc``) around each half. The ratio is what batching saves the gateway per
report under load.
"""

from __future__ import annotations

import itertools
import os
import statistics
from dataclasses import dataclass

import httpx

from benchmarks.stack import BenchStack
from switchboard_common.internal_calls import (
    USAGE_SETTLEMENT_PATH,
    UsageSettlement,
    UsageSettlementBatch,
    sign_internal_call,
)

REPORTS = 640
BATCH = 16


@dataclass
class U1Result:
    single_ms: float  # median gateway CPU ms per report, one report per POST
    batched_ms: float  # the same, BATCH reports per POST

    @property
    def factor(self) -> float:
        return self.single_ms / self.batched_ms if self.batched_ms > 0 else float("inf")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reservation(client: httpx.Client, gateway: str, headers: dict[str, str]) -> str:
    """A token reservation ``gateway`` made for a chat it forwarded to the bench upstream."""
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    answer = client.post(gateway + "/inference/chat", json=chat, headers=headers)
    answer.raise_for_status()
    value = answer.json().get("reservation")
    if not value:
        raise RuntimeError("U1: the gateway forwarded no token reservation")
    return str(value)


def run_u1(stack: BenchStack, rounds: int = 3) -> U1Result:
    gateway = stack.full_gateways[0]
    pid = stack.pid_of("gateway-full-a")
    url = gateway + USAGE_SETTLEMENT_PATH
    single: list[float] = []
    batched: list[float] = []
    with httpx.Client(timeout=10) as client:
        sealed = reservation(client, gateway, stack.auth_headers)
        seqs = itertools.count(1)  # seq 0 settles the chat's own estimate; the rest charge

        def report() -> UsageSettlement:
            return UsageSettlement(
                reservation=sealed, seq=next(seqs), prompt_tokens=3, completion_tokens=4
            )

        def post_all(bodies: list[bytes]) -> float:
            before = process_cpu_s(pid)
            for body in bodies:
                headers = sign_internal_call(stack.secret, USAGE_SETTLEMENT_PATH, body)
                answer = client.post(url, content=body, headers=headers)
                if answer.status_code != 200:
                    raise RuntimeError(f"U1: the gateway answered {answer.status_code}")
                outcome = answer.json()
                if outcome.get("settled") is not True and set(outcome.get("results", [])) != {
                    "settled"
                }:  # a duplicate takes a cheaper path: it would flatter the row
                    raise RuntimeError(f"U1: not every report was settled: {outcome}")
            return (process_cpu_s(pid) - before) * 1000 / REPORTS

        for _ in range(rounds):
            ones = [report().model_dump_json().encode() for _ in range(REPORTS)]
            batches = [
                UsageSettlementBatch(reports=[report() for _ in range(BATCH)])
                .model_dump_json()
                .encode()
                for _ in range(REPORTS // BATCH)
            ]
            single.append(post_all(ones))
            batched.append(post_all(batches))
    return U1Result(statistics.median(single), statistics.median(batched))
