"""S1: streaming through gateway + inference vs the simulator directly.

- TTFT: time from request to the first token chunk, sequential requests: each round sends
  the same kind of chat straight to the simulator, through gateway + inference, through a
  bare proxy + inference (``bare_proxy.py``: the floor of one Python HTTP hop) and straight
  to the inference service (so the gateway's and the service's shares of the added time can
  be told apart, and the gateway's from a hop's); the added time is the median of the
  per-round differences (a slow moment of the machine shifts both sides of a round, not the
  result), after two warm-up rounds;
- inter-chunk fidelity: the simulator emits a token every ``TOKEN_MS``; through the stack
  the gaps between arrivals must stay that size (no batching: two tokens arriving within
  a few ms of each other means something buffered them);
- queue overhead at saturation: non-streaming chats, more concurrent clients than slots,
  through the inference service (admission queue) vs straight to the simulator with the
  same parallelism, per request.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass

import httpx

TOKEN_MS = 20
TOKENS = 12
MODEL = "llama3.2:latest"


@dataclass
class S1Result:
    ttft_direct_ms: float
    ttft_stack_ms: float
    gap_mean_ms: float
    gap_stdev_ms: float
    batched: int
    chunks: int
    queue_overhead_ms: float
    ttft_inference_ms: float  # straight to the inference service (no gateway)
    added_ms: float  # median over rounds of (gateway + inference) - direct
    service_added_ms: float  # median over rounds of (inference alone) - direct
    bare_added_ms: float  # median over rounds of (bare proxy + inference) - direct
    over_bare_ms: float  # median over rounds of (gateway + inference) - (bare proxy + inference)


async def _ttft_and_gaps(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, object],
    headers: dict[str, str],
    marker: bytes,
) -> tuple[float, list[float]]:
    start = time.perf_counter()
    arrivals: list[float] = []
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        resp.raise_for_status()
        async for piece in resp.aiter_raw():
            if marker in piece:
                arrivals.extend([time.perf_counter()] * piece.count(marker))
    first = (arrivals[0] - start) * 1000
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    return first, gaps


async def run_s1(sim: str, gateway: str, inference: str, bare: str, headers: dict[str, str],
                 service_headers: dict[str, str], rounds: int = 30,
                 warmup: int = 2) -> S1Result:  # fmt: skip
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": TOKENS, "temperature": 0.7}}  # fmt: skip
    async with httpx.AsyncClient(timeout=30) as client:
        await client.post(sim + "/_sim/config", json={"token_delay_ms": TOKEN_MS})
        direct, stack, floor, service, gaps = [], [], [], [], []
        for i in range(warmup + rounds):
            message = {"role": "user", "content": f"hello there {i}"}
            b = {**body, "messages": [message], "stream": True}
            first, _ = await _ttft_and_gaps(client, sim + "/api/chat", b, {}, b'"done":false')
            direct.append(first)
            first, g = await _ttft_and_gaps(
                client, gateway + "/inference/chat", b, headers, b"event: token"
            )
            stack.append(first)
            gaps += g
            first, _ = await _ttft_and_gaps(
                client, bare + "/inference/chat", b, service_headers, b"event: token"
            )
            floor.append(first)
            first, _ = await _ttft_and_gaps(
                client, inference + "/inference/chat", b, service_headers, b"event: token"
            )
            service.append(first)
        await client.post(sim + "/_sim/config", json={"token_delay_ms": 0, "num_parallel": 4})
        overhead = await _queue_overhead(client, sim, inference, service_headers, body)
    direct, stack, service = direct[warmup:], stack[warmup:], service[warmup:]
    floor = floor[warmup:]
    return S1Result(
        statistics.median(direct), statistics.median(stack), statistics.mean(gaps),
        statistics.pstdev(gaps), sum(1 for g in gaps if g < TOKEN_MS / 4), len(gaps), overhead,
        statistics.median(service),
        statistics.median(s - d for s, d in zip(stack, direct, strict=True)),
        statistics.median(s - d for s, d in zip(service, direct, strict=True)),
        statistics.median(f - d for f, d in zip(floor, direct, strict=True)),
        statistics.median(s - f for s, f in zip(stack, floor, strict=True)),
    )  # fmt: skip


async def _queue_overhead(
    client: httpx.AsyncClient, sim: str, inference: str, headers: dict[str, str],
    body: dict[str, object], requests: int = 120, clients: int = 16,
) -> float:  # fmt: skip
    """Per-request ms the inference service adds at saturation (16 clients, 4 slots)."""

    async def drive(url: str, payload: dict[str, object], hdrs: dict[str, str], n: int) -> float:
        sem = asyncio.Semaphore(n)
        start = time.perf_counter()

        async def one(i: int) -> None:
            async with sem:
                msg = {"role": "user", "content": f"q{i}"}
                r = await client.post(url, json={**payload, "messages": [msg]}, headers=hdrs)
                r.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(requests)))
        return (time.perf_counter() - start) * 1000

    payload = {**body, "stream": False}
    direct = await drive(sim + "/api/chat", payload, {}, 4)
    queued = await drive(inference + "/inference/chat", payload, headers, clients)
    return (queued - direct) / requests
