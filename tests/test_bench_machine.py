"""The bench's M1 row (benchmarks/machine.py): the cold-start factor S1 is read against."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import m1_row, parse_only
from benchmarks.machine import ColdStart, cold_start


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
