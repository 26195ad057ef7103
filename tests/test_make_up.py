"""`make up` / `make down` from a fresh copy of the repository: the newcomer's path.

Copies the working tree (tracked and untracked-not-ignored files, so it tests what would
be committed), runs `make up` on free ports, checks the banner and the cluster, runs
`make up` again (harmless), then `make down` and checks every recorded process is gone.
Bounded: the whole test must finish within 3 minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from switchboard_devtools.cluster import ALL
from switchboard_devtools.ports import free_port, port_open
from switchboard_devtools.process import pid_alive
from tests.fixtures.processes import REPO_ROOT
from tests.support.auth_client import login

pytestmark = pytest.mark.slow


def copy_working_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO_ROOT / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def make(
    target: str, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", target], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.mark.timeout(200)
def test_make_up_and_down_from_a_fresh_copy(tmp_path: Path) -> None:
    started = time.monotonic()
    clone = tmp_path / "switchboard"
    copy_working_tree(clone)
    ports = {spec.name: free_port() for spec in ALL}
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VIRTUAL_ENV", "UV_", "PYTEST", "GATEWAY_", "AUTH_", "INFERENCE_"))
    }
    env.update({f"{spec.env_prefix}PORT": str(ports[spec.name]) for spec in ALL})
    redis_port = free_port()
    env["SWITCHBOARD_REDIS_PORT"] = str(redis_port)
    env["SWITCHBOARD_SIMULATOR_PORT"] = str(free_port())
    env["OLLAMA_URL"] = f"http://127.0.0.1:{free_port()}"  # no Ollama there: simulator

    up = make("up", clone, env, timeout=150)
    assert up.returncode == 0, up.stdout + up.stderr
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    assert "Switchboard is up" in up.stdout
    assert "SIMULATED" in up.stdout  # the loud simulator banner
    assert gateway in up.stdout and f"curl -s {gateway}/health" in up.stdout
    try:
        health = httpx.get(gateway + "/health", params={"strict": "true"}, timeout=5).json()
        assert health["status"] == "ok"
        # the first admin was generated and saved; it can log in and reach a service
        user, _, password = (
            (clone / ".run" / "admin-credentials").read_text().strip().partition(":")
        )
        assert f"Admin: {user}" in up.stdout and password not in up.stdout
        admin = login(gateway, user, password)
        whoami = httpx.get(gateway + "/memory/whoami", headers=admin.headers, timeout=5).json()
        assert whoami["username"] == user and "admin" in whoami["scope"]
        pids = {
            p.stem: int(p.read_text().split()[0]) for p in (clone / ".run" / "pids").glob("*.pid")
        }
        assert set(pids) == {spec.name for spec in ALL} | {"redis", "ollama-sim"}
        assert all(pid_alive(pid) for pid in pids.values())
        assert (clone / ".run" / "logs" / "gateway.log").is_file()

        again = make("up", clone, env, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already up" in again.stdout
    finally:
        down = make("down", clone, env, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not port_open("127.0.0.1", ports["gateway"])
    assert not port_open("127.0.0.1", redis_port)
    assert not list((clone / ".run" / "pids").glob("*.pid"))
    assert time.monotonic() - started < 180


@pytest.mark.timeout(120)
def test_up_reports_the_failing_service(tmp_path: Path) -> None:
    """A service that cannot start: non-zero exit, its log tail, nothing left running.

    Runs the same `switchboard-dev up` that `make up` runs, from this checkout's venv (the
    fresh-copy test above covers installing)."""
    ports = {spec.name: free_port() for spec in ALL}
    env = dict(os.environ)
    env.update({f"{spec.env_prefix}PORT": str(ports[spec.name]) for spec in ALL})
    env["SWITCHBOARD_REDIS_PORT"] = str(free_port())
    env["SWITCHBOARD_SIMULATOR_PORT"] = str(free_port())
    env["OLLAMA_URL"] = f"http://127.0.0.1:{free_port()}"
    env["MEMORY_LOG_LEVEL"] = "not-a-level"  # memory refuses to start: invalid setting
    run_dir = tmp_path / "run"
    up = subprocess.run(
        [sys.executable, "-m", "switchboard_devtools.cli", "up", "--run-dir", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert up.returncode != 0
    assert "memory" in up.stdout and "log_level" in up.stdout  # the log tail names the cause
    assert not list((run_dir / "pids").glob("*.pid"))
    assert not port_open("127.0.0.1", ports["auth"])
