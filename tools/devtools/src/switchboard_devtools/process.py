"""A child process with a log file, a readiness wait and a clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class ProcessFailed(RuntimeError):
    """The process exited or never became ready; the message carries its log tail."""


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback URL)
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ManagedProcess:
    """Start ``argv`` in its own session with output to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running():
                raise ProcessFailed(
                    f"{self.name} exited (code {self.proc and self.proc.returncode}) before "
                    f"{what}. Last log lines ({self.log_path}):\n{log_tail(self.log_path)}"
                )
            if ready():
                return
            time.sleep(0.05)
        raise ProcessFailed(
            f"{self.name} not {what} within {timeout_s:g}s. Last log lines "
            f"({self.log_path}):\n{log_tail(self.log_path)}"
        )

    def wait_http(self, url: str, timeout_s: float = 30.0) -> None:
        self.wait_until(lambda: http_ok(url), timeout_s, f"ready at {url}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None:
            return
        stop_pid(self.proc.pid, timeout_s, wait=self.proc.wait)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, no grace: for fault tests that simulate a crash."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


def stop_pid(
    pid: int, timeout_s: float = 10.0, wait: Callable[[float], object] | None = None
) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL after ``timeout_s``. True if it ran."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wait is not None:
            try:
                wait(0.1)
                return True
            except subprocess.TimeoutExpired:
                continue
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if wait is not None:
        wait(5)
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
