"""`make bench` — the gateway measured side by side with what it fronts, in one run.

Rounds alternate the variants so each sees the same machine state; medians are reported.
Bounded (~3-4 min with the defaults), loopback only. Every response must be 2xx (429 where
R1 expects it): a bench that measured errors fails instead of printing flattering numbers.

F1  gateway pass-through ÷ direct upstream, req/s at 50 connections     target ≥ 0.85
F2  added p50 latency at 1 connection                                    target ≤ 0.30 ms
A1  authenticated request ÷ the same request unauthenticated, req/s     target ≥ 0.90
A2  /auth/token logins per second (bounded by the password hash)         reported
S1  time to first token, gateway+inference vs the simulator directly      target ≤ 3 ms added
    plus inter-chunk fidelity (no batching) and queue overhead at saturation
M1  the same Python work right after 10 ms idle ÷ back to back (reported: how much a
    woken process slows down on this machine, which S1's added time depends on)
U1  gateway CPU per token-budget usage report, one per POST ÷ 16 per batched POST (reported)
G1 G2 G3 C1 R1  the Gateway issue's rows: see benchmarks/gateway_bench.py

`--only G1,R1` (via `make bench BENCH_ARGS="--only G1,R1"`) measures just those rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from benchmarks import gateway_bench
from benchmarks.gateway_bench import TraefikFront
from benchmarks.inference_bench import TOKEN_MS, S1Result, run_s1
from benchmarks.machine import ColdStart, cold_start
from benchmarks.settlement_bench import BATCH, U1Result, run_u1
from benchmarks.stack import ARGON2, BenchStack, new_stack
from benchmarks.table import Row, failed, print_table
from benchmarks.wrk import WrkResult, ensure_wrk, median, run_wrk

PATH = "/ping"
ROWS = ("F1", "F2", "A1", "A2", "S1", "M1", "U1", "G1", "G2", "G3", "C1", "R1")


def measure(
    stack: BenchStack, rounds: int, seconds: float, wanted: set[str], traefik: TraefikFront
) -> dict[str, WrkResult]:
    variants: dict[str, Callable[[int, float], WrkResult]] = {}
    if wanted & {"F1", "F2", "G1", "G3", "G2"}:
        variants["direct"] = lambda c, s: run_wrk(
            stack.upstream + "/memory" + PATH, connections=c, seconds=s
        )
    if wanted & {"F1", "F2", "A1"}:
        variants["gateway"] = lambda c, s: run_wrk(
            stack.gateway + "/memory" + PATH, connections=c, seconds=s
        )
    if "A1" in wanted:
        variants["gateway+auth"] = lambda c, s: run_wrk(
            stack.gateway + "/inference" + PATH, connections=c, seconds=s,
            headers=stack.auth_headers,
        )  # fmt: skip
    if wanted & {"G1", "G3", "G2"}:
        variants.update(gateway_bench.variants(stack, traefik.url))
    for run in variants.values():  # warm up every path
        run(50, 2)
    results: dict[str, list[WrkResult]] = {}
    for _ in range(rounds):
        for name, run in variants.items():
            results.setdefault(f"{name} 50c", []).append(run(50, seconds))
            results.setdefault(f"{name} 1c", []).append(run(1, 2))
    if "A2" in wanted:
        os.environ["BENCH_USER"], os.environ["BENCH_PASSWORD"] = stack.user, stack.password
        script = os.path.join(os.path.dirname(__file__), "login.lua")
        # argon2id on a busy 2-core machine can take more than wrk's default 2 s
        login = run_wrk(stack.gateway + "/auth/token", connections=4, seconds=5,
                        script=script, timeout_s=10)  # fmt: skip
        results["logins 4c"] = [login]
    return {name: median(rs) for name, rs in results.items()}


def s1_rows(s1: S1Result) -> list[Row]:
    added = s1.added_ms
    return [
        Row("S1 time to first token, simulator direct", f"{s1.ttft_direct_ms:.2f}ms"),
        Row("   time to first token, gateway + inference", f"{s1.ttft_stack_ms:.2f}ms"),
        Row("S1 added TTFT (median of per-round differences)", f"{added:+.2f}ms", "<= 3ms",
            added <= 3),
        Row("   of which the inference service alone (no gateway)",
            f"{s1.service_added_ms:+.2f}ms"),
        Row("   a bare proxy hop + inference (the floor of one Python HTTP hop)",
            f"{s1.bare_added_ms:+.2f}ms"),
        Row("   the gateway's features beyond that bare hop", f"{s1.over_bare_ms:+.2f}ms"),
        Row(f"   inter-chunk gap (sim emits every {TOKEN_MS} ms), mean ± sd",
            f"{s1.gap_mean_ms:.1f}±{s1.gap_stdev_ms:.1f}"),
        Row(f"   chunks batched together ({s1.chunks} gaps)", str(s1.batched), "0",
            s1.batched == 0),
        Row("   queue overhead per request at saturation", f"{s1.queue_overhead_ms:+.2f}ms"),
    ]  # fmt: skip


def m1_row(m1: ColdStart) -> Row:
    return Row(
        f"M1 same work after {m1.idle_s * 1000:.0f} ms idle ÷ back to back "
        f"({m1.warm_us:.0f} → {m1.cold_us:.0f} µs)",
        f"{m1.factor:.1f}x",
    )


def u1_row(u1: U1Result) -> Row:
    return Row(
        f"U1 gateway CPU per usage report, alone ÷ {BATCH} per POST "
        f"({u1.single_ms:.3f} → {u1.batched_ms:.3f} ms)",
        f"{u1.factor:.1f}x",
    )


def wrk_rows(r: dict[str, WrkResult], wanted: set[str]) -> list[Row]:
    rows: list[Row] = []
    if wanted & {"F1", "F2"}:
        f1 = r["gateway 50c"].requests_per_s / r["direct 50c"].requests_per_s
        f2 = r["gateway 1c"].p50_ms - r["direct 1c"].p50_ms
        rows.append(Row("F1 pass-through ÷ direct req/s", f"{f1:.2f}x", ">= 0.85x", f1 >= 0.85))
        rows.append(Row("F2 added p50 at 1 conn", f"{f2:+.3f}ms", "<= 0.30ms", f2 <= 0.30))
    if "A1" in wanted:
        a1 = r["gateway+auth 50c"].requests_per_s / r["gateway 50c"].requests_per_s
        rows.append(Row("A1 authenticated ÷ unauthenticated", f"{a1:.2f}x", ">= 0.90x",
                        a1 >= 0.90))  # fmt: skip
    if "A2" in wanted:
        argon = ", ".join(
            f"{k.removeprefix('AUTH_ARGON2_').lower()}={v}" for k, v in ARGON2.items()
        )
        a2 = r["logins 4c"].requests_per_s
        rows.append(Row(f"A2 logins/s (argon2id {argon})", f"{a2:.1f}/s"))
    return rows


def print_runs(r: dict[str, WrkResult], elapsed: float, rounds: int) -> None:
    if not r:
        return
    print(f"\nSwitchboard bench — median of {rounds} alternating rounds ({elapsed:.0f}s)")
    print(f"{'run':<26}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, res in r.items():
        print(f"{name:<26}{res.requests_per_s:>10,.0f}{res.p50_ms:>10.3f}{res.p99_ms:>10.3f}"
              f"{res.errors:>8}")  # fmt: skip


def parse_only(text: str) -> set[str]:
    wanted = {part.strip().upper() for part in text.split(",") if part.strip()}
    unknown = wanted - set(ROWS)
    if unknown:
        raise SystemExit(f"--only: unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    return wanted


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per 50-conn run")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=set(ROWS),
        help=f"comma-separated rows to measure (default all: {','.join(ROWS)})",
    )
    args = parser.parse_args()  # fmt: skip
    wanted: set[str] = args.only
    ensure_wrk()
    # before the stack starts: measured on a quiet machine
    m1 = cold_start() if "M1" in wanted else None
    stack = new_stack()
    rows: list[Row] = []
    errors = 0
    try:
        t0 = time.monotonic()
        in_front: AbstractContextManager[TraefikFront] = (
            gateway_bench.traefik_in_front(stack)
            if "G2" in wanted
            else nullcontext(TraefikFront(None, "not asked for"))
        )
        with in_front as traefik:
            results = measure(stack, args.rounds, args.seconds, wanted, traefik)
        spans = gateway_bench.spans_exported(stack)
        print_runs(results, time.monotonic() - t0, args.rounds)
        errors += sum(res.errors for res in results.values())
        rows += wrk_rows(results, wanted)
        rows += gateway_bench.g_rows(results, wanted, traefik, spans)
        if "C1" in wanted:
            c1 = gateway_bench.run_c1(stack, args.rounds)
            # answers that did not come from the cache make C1 invalid, like errors do
            errors += c1.cached.errors + c1.plain.errors + c1.direct.errors + c1.uncached
            rows += gateway_bench.c1_rows(c1)
        if "R1" in wanted:
            r1 = gateway_bench.run_r1(stack)
            errors += r1.other
            rows += gateway_bench.r1_rows(r1)
        if "S1" in wanted:
            s1 = asyncio.run(
                run_s1(stack.sim, stack.stream_gateway, stack.inference, stack.bare_proxy,
                       stack.auth_headers, stack.service_headers())
            )  # fmt: skip
            rows += s1_rows(s1)
        if "U1" in wanted:
            rows.append(u1_row(run_u1(stack, args.rounds + 1)))
        if m1 is not None:
            rows.append(m1_row(m1))
    finally:
        stack.stop()
    print_table(f"Switchboard bench ({time.monotonic() - t0:.0f}s)", rows)
    below = failed(rows)
    if below:
        print(f"\nbelow target: {', '.join(row.name.split()[0] for row in below)}")
    print(f"\nlogs: {stack.logs}")
    if errors:
        print(f"\n!! {errors} unexpected responses or socket errors: these numbers are not valid")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
