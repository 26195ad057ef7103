"""The bench's reported rows: M1 (benchmarks/machine.py), the cold-start factor S1 is read
against, and U1 (benchmarks/settlement_bench.py), the gateway's CPU per usage report."""

from __future__ import annotations

import time

import pytest

from benchmarks.__main__ import m1_row, parse_only, u1_row
from benchmarks.machine import ColdStart, cold_start
from benchmarks.settlement_bench import U1Result, process_cpu_s


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
