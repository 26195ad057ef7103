"""Bench parts: the reported rows M1 (benchmarks/machine.py), the cold-start factor S1 is
read against, and U1 (benchmarks/settlement_bench.py), the gateway's CPU per usage report;
and S1's bare proxy hop (benchmarks/bare_proxy.py)."""

from __future__ import annotations

import itertools
import json
import time

import httpx
import pytest

from benchmarks.__main__ import m1_row, parse_only, u1_row
from benchmarks.machine import ColdStart, cold_start
from benchmarks.settlement_bench import U1Result, process_cpu_s
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv


def test_cold_start_measures_both_sides() -> None:
    result = cold_start(samples=3, idle_s=0.001)
    assert result.warm_us > 0
    assert result.cold_us > 0
    assert result.idle_s == 0.001
    assert result.factor == pytest.approx(result.cold_us / result.warm_us)


def test_m1_row_reports_the_ratio_and_both_medians() -> None:
    row = m1_row(ColdStart(warm_us=12.0, cold_us=240.0, idle_s=0.01))
    assert row.value == "20.0x"
    assert "10 ms idle" in row.name
    assert "12 → 240 µs" in row.name
    assert row.verdict == "-"  # reported, not judged


def test_m1_can_be_asked_for_alone() -> None:
    assert parse_only("m1, S1") == {"M1", "S1"}


def test_u1_row_reports_the_ratio_and_both_costs() -> None:
    row = u1_row(U1Result(single_ms=0.5, batched_ms=0.125))
    assert row.value == "4.0x"
    assert "0.500 → 0.125 ms" in row.name
    assert row.verdict == "-"
    assert parse_only("u1") == {"U1"}


def test_process_cpu_s_counts_this_process() -> None:
    import os

    before = process_cpu_s(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert process_cpu_s(os.getpid()) - before >= 0.03


def test_bare_proxy_relays_a_stream_as_it_comes(spawn: Spawn) -> None:
    """S1's floor hop (benchmarks/bare_proxy.py), a real process in front of the simulator:
    the same NDJSON stream as straight from the simulator, chunk by chunk."""
    sim_port, proxy_port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    spawn("sim", module_argv("ollama_sim", "--port", str(sim_port)), ready_url=sim + "/api/version")
    proxy = f"http://127.0.0.1:{proxy_port}"
    spawn(
        "bare-proxy",
        module_argv("benchmarks.bare_proxy", "--port", str(proxy_port)),
        env={"BARE_PROXY_UPSTREAM": f"127.0.0.1:{sim_port}"},
        ready_url=proxy + "/api/version",
    )
    body = {"model": "llama3.2", "prompt": "hello", "options": {"num_predict": 5}}
    httpx.post(sim + "/_sim/config", json={"token_delay_ms": 30}, timeout=5).raise_for_status()

    def stream(url: str) -> tuple[list[bytes], list[float]]:
        lines: list[bytes] = []
        arrivals: list[float] = []
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=10) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/x-ndjson"
            for line in resp.iter_lines():
                lines.append(line.encode())
                arrivals.append(time.monotonic())
        return lines, arrivals

    direct, _ = stream(sim)
    relayed, arrivals = stream(proxy)
    strip = [json.loads(x) for x in relayed]
    assert [d.get("response") for d in strip] == [json.loads(x).get("response") for x in direct]
    assert strip[-1]["done"] is True
    gaps = [b - a for a, b in itertools.pairwise(arrivals[:-1])]
    assert gaps and min(gaps) > 0.015  # each token as it came, not buffered to the end
