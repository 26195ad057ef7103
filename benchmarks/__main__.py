"""`make bench` — gateway pass-through vs direct, side by side in one run.

Upstream: a bare FastAPI ``/ping`` under one uvicorn worker (the reference point of the
issues). The gateway routes ``/memory/*`` to it. Runs alternate direct/gateway rounds so
both see the same machine state, and report the median round. Bounded (~60 s), loopback
only. Targets (issue "Foundation"): pass-through ≥ 0.85× direct req/s; ≤ 0.3 ms added p50
at one connection.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.wrk import WrkResult, ensure_wrk, run_wrk
from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess


def start(name: str, argv: list[str], env: dict[str, str], logs: Path, url: str) -> ManagedProcess:
    proc = ManagedProcess(name, argv, log_path=logs / f"{name}.log", env=env).start()
    proc.wait_http(url, timeout_s=30)
    return proc


def median(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per 50-conn run")
    args = parser.parse_args()
    ensure_wrk()
    logs = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    py = sys.executable
    procs = [
        start(
            "upstream",
            [py, "-m", "uvicorn", "benchmarks.upstream_app:app", "--port", str(up_port),
             "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            {}, logs, upstream + "/memory/ping",
        ),
        start(
            "gateway",
            [py, "-m", "gateway"],
            {"GATEWAY_PORT": str(gw_port), "GATEWAY_MEMORY_URL": upstream,
             "GATEWAY_LOG_LEVEL": "warning"},
            logs, gateway + "/ready",
        ),
    ]  # fmt: skip
    try:
        path = "/memory/ping"
        for url in (upstream + path, gateway + path):  # warm up both paths
            run_wrk(url, connections=50, seconds=2)
        direct, through = [], []
        direct1, through1 = [], []
        t0 = time.monotonic()
        for _ in range(args.rounds):
            direct.append(run_wrk(upstream + path, connections=50, seconds=args.seconds))
            through.append(run_wrk(gateway + path, connections=50, seconds=args.seconds))
            direct1.append(run_wrk(upstream + path, connections=1, seconds=2))
            through1.append(run_wrk(gateway + path, connections=1, seconds=2))
        d, g, d1, g1 = median(direct), median(through), median(direct1), median(through1)
        elapsed = time.monotonic() - t0
    finally:
        for proc in reversed(procs):
            proc.stop()

    ratio = g.requests_per_s / d.requests_per_s
    added_p50 = g1.p50_ms - d1.p50_ms
    rows = [
        ("direct upstream, 50 conns", d),
        ("gateway pass-through, 50 conns", g),
        ("direct upstream, 1 conn", d1),
        ("gateway pass-through, 1 conn", g1),
    ]
    print(f"\nSwitchboard bench — median of {args.rounds} alternating rounds ({elapsed:.0f}s)")
    print(f"{'run':<34}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in rows:
        print(f"{name:<34}{r.requests_per_s:>10,.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}")
    print()
    print(f"{'metric':<44}{'value':>10}{'target':>10}  ok")
    checks = [
        ("F1 pass-through ÷ direct req/s (50 conns)", f"{ratio:.2f}x", ">= 0.85x", ratio >= 0.85),
        ("F2 added p50 at 1 conn", f"{added_p50:+.3f}ms", "<= 0.30ms", added_p50 <= 0.30),
    ]
    for name, value, target, ok in checks:
        print(f"{name:<44}{value:>10}{target:>10}  {'yes' if ok else 'NO'}")
    errors = d.errors + g.errors + d1.errors + g1.errors
    if errors:
        print(f"\n!! {errors} non-2xx responses or socket errors during the runs")
    print(f"\nlogs: {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
