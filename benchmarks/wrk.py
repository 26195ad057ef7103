"""Run wrk against loopback URLs and parse its report (req/s, p50, p99)."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0  # completed requests (to check counters such as cache hits against)
    socket_errors: int = 0  # connect/read/write/timeout errors (also counted in ``errors``)
    report: str = field(default="", repr=False)  # wrk's output, with what a script printed


def median(results: list[WrkResult]) -> WrkResult:
    """Per-field medians of alternating rounds; errors and requests are summed."""
    return WrkResult(
        statistics.median(r.requests_per_s for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(r.requests for r in results),
        sum(r.socket_errors for r in results),
    )


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        path = shutil.which("wrk")
        if path:
            return path
    raise SystemExit("wrk not found: install it (apt-get install wrk) and run make bench again.")


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if not match:
        raise ValueError(f"unparsable wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: str | None = None,
    timeout_s: float | None = None,
) -> WrkResult:
    """One wrk run; ``script`` is a Lua file (e.g. to POST a form); ``timeout_s`` replaces
    wrk's 2 s per-request timeout (a slower answer counts as a socket error)."""
    if not url.startswith(("http://127.", "http://localhost")):
        raise ValueError("benchmarks target loopback addresses only")
    argv = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script:
        argv += ["-s", script]
    if timeout_s:
        argv += ["--timeout", f"{timeout_s:g}s"]
    argv += ["--latency", url]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    done = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(g) for g in sock.groups()) if sock else 0
    errors = socket_errors + (int(non2xx.group(1)) if non2xx else 0)
    requests = int(done.group(1)) if done else 0
    return WrkResult(rps, p50, p99, errors, requests, socket_errors, out)
