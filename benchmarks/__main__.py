"""`make bench` — the gateway measured side by side with what it fronts, in one run.

Rounds alternate the variants so each sees the same machine state; medians are reported.
Bounded (~90 s), loopback only. Every response must be 2xx: a bench that measured errors
fails instead of printing flattering numbers.

F1  gateway pass-through ÷ direct upstream, req/s at 50 connections     target ≥ 0.85
F2  added p50 latency at 1 connection                                    target ≤ 0.30 ms
A1  authenticated request ÷ the same request unauthenticated, req/s     target ≥ 0.90
A2  /auth/token logins per second (bounded by the password hash)         reported
S1  time to first token, gateway+inference vs the simulator directly      target ≤ 3 ms added
    plus inter-chunk fidelity (no batching) and queue overhead at saturation
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.inference_bench import TOKEN_MS, S1Result, run_s1
from benchmarks.stack import ARGON2, BenchStack, new_stack
from benchmarks.wrk import WrkResult, ensure_wrk, run_wrk

PATH = "/ping"


def median(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def measure(stack: BenchStack, rounds: int, seconds: float) -> dict[str, WrkResult]:
    variants: dict[str, Callable[[int, float], WrkResult]] = {
        "direct": lambda c, s: run_wrk(stack.upstream + "/memory" + PATH, connections=c, seconds=s),
        "gateway": lambda c, s: run_wrk(stack.gateway + "/memory" + PATH, connections=c, seconds=s),
        "gateway+auth": lambda c, s: run_wrk(
            stack.gateway + "/inference" + PATH, connections=c, seconds=s,
            headers=stack.auth_headers,
        ),
    }  # fmt: skip
    for run in variants.values():  # warm up every path
        run(50, 2)
    results: dict[str, list[WrkResult]] = {}
    for _ in range(rounds):
        for name, run in variants.items():
            results.setdefault(f"{name} 50c", []).append(run(50, seconds))
            results.setdefault(f"{name} 1c", []).append(run(1, 2))
    os.environ["BENCH_USER"], os.environ["BENCH_PASSWORD"] = stack.user, stack.password
    script = os.path.join(os.path.dirname(__file__), "login.lua")
    results["logins 4c"] = [
        run_wrk(stack.gateway + "/auth/token", connections=4, seconds=5, script=script)
    ]
    return {name: median(rs) for name, rs in results.items()}


def report_s1(s1: S1Result) -> bool:
    added = s1.ttft_stack_ms - s1.ttft_direct_ms
    print(f"\n{'S1 streaming (inference)':<58}{'value':>10}{'target':>10}  ok")
    rows = [
        ("time to first token, simulator direct", f"{s1.ttft_direct_ms:.2f}ms", "", True),
        ("time to first token, gateway + inference", f"{s1.ttft_stack_ms:.2f}ms", "", True),
        ("S1 added TTFT", f"{added:+.2f}ms", "<= 3ms", added <= 3),
        (f"inter-chunk gap (sim emits every {TOKEN_MS} ms), mean ± sd",
         f"{s1.gap_mean_ms:.1f}±{s1.gap_stdev_ms:.1f}", "", True),
        (f"chunks batched together ({s1.chunks} gaps)", str(s1.batched), "0", s1.batched == 0),
        ("queue overhead per request at saturation", f"{s1.queue_overhead_ms:+.2f}ms", "report",
         True),
    ]  # fmt: skip
    for name, value, target, ok in rows:
        print(f"{name:<58}{value:>10}{target:>10}  {'yes' if ok else 'NO'}")
    return True


def report(r: dict[str, WrkResult], elapsed: float, rounds: int) -> int:
    print(f"\nSwitchboard bench — median of {rounds} alternating rounds ({elapsed:.0f}s)")
    print(f"{'run':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, res in r.items():
        print(f"{name:<22}{res.requests_per_s:>10,.0f}{res.p50_ms:>10.3f}{res.p99_ms:>10.3f}")
    f1 = r["gateway 50c"].requests_per_s / r["direct 50c"].requests_per_s
    f2 = r["gateway 1c"].p50_ms - r["direct 1c"].p50_ms
    a1 = r["gateway+auth 50c"].requests_per_s / r["gateway 50c"].requests_per_s
    a2 = r["logins 4c"].requests_per_s
    argon = ", ".join(f"{k.removeprefix('AUTH_ARGON2_').lower()}={v}" for k, v in ARGON2.items())
    rows = [
        ("F1 pass-through ÷ direct req/s", f"{f1:.2f}x", ">= 0.85x", f1 >= 0.85),
        ("F2 added p50 at 1 conn", f"{f2:+.3f}ms", "<= 0.30ms", f2 <= 0.30),
        ("A1 authenticated ÷ unauthenticated", f"{a1:.2f}x", ">= 0.90x", a1 >= 0.90),
        ("A2 logins/s (argon2id " + argon + ")", f"{a2:.1f}/s", "report", True),
    ]
    print(f"\n{'metric':<58}{'value':>10}{'target':>10}  ok")
    for name, value, target, ok in rows:
        print(f"{name:<58}{value:>10}{target:>10}  {'yes' if ok else 'NO'}")
    errors = sum(res.errors for res in r.values())
    if errors:
        print(f"\n!! {errors} non-2xx responses or socket errors: these numbers are not valid")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per 50-conn run")
    args = parser.parse_args()
    ensure_wrk()
    stack = new_stack()
    try:
        t0 = time.monotonic()
        results = measure(stack, args.rounds, args.seconds)
        elapsed = time.monotonic() - t0
        s1 = asyncio.run(
            run_s1(stack.sim, stack.stream_gateway, stack.inference, stack.auth_headers,
                   stack.service_headers())
        )  # fmt: skip
    finally:
        stack.stop()
    status = report(results, elapsed, args.rounds)
    report_s1(s1)
    print(f"\nlogs: {stack.logs}")
    return status


if __name__ == "__main__":
    sys.exit(main())
