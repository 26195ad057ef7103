"""The dev cluster's wiring and the process helpers (real child processes)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from switchboard_devtools.cli import RunDir
from switchboard_devtools.cluster import ALL, GATEWAY, SERVICES, ClusterPlan, default_ports
from switchboard_devtools.process import ManagedProcess, ProcessFailed, pid_alive, stop_pid


def plan(tmp_path: Path) -> ClusterPlan:
    ports = {spec.name: 9000 + i for i, spec in enumerate(ALL)}
    return ClusterPlan(run_dir=tmp_path, ports=ports, redis_url="redis://127.0.0.1:7777")


def test_every_service_gets_its_port_and_own_redis_db(tmp_path: Path) -> None:
    p = plan(tmp_path)
    dbs = set()
    for spec in SERVICES:
        env = p.env_for(spec)
        assert env[f"{spec.env_prefix}PORT"] == str(p.ports[spec.name])
        if spec.redis_db is not None:
            url = env[f"{spec.env_prefix}REDIS_URL"]
            assert url.startswith("redis://127.0.0.1:7777/")
            dbs.add(url)
    assert len(dbs) == len([s for s in SERVICES if s.redis_db is not None])  # no sharing


def test_gateway_points_at_every_service(tmp_path: Path) -> None:
    env = plan(tmp_path).env_for(GATEWAY)
    for spec in SERVICES:
        assert env[f"GATEWAY_{spec.name.upper()}_URL"] == plan(tmp_path).url(spec.name)


def test_ports_come_from_the_services_own_env_vars() -> None:
    ports = default_ports({"GATEWAY_PORT": "18000", "MEMORY_PORT": "18004"})
    assert ports["gateway"] == 18000 and ports["memory"] == 18004 and ports["auth"] == 8001


def test_process_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "dying",
        [sys.executable, "-c", "import sys; print('cannot bind: port in use'); sys.exit(3)"],
        log_path=tmp_path / "dying.log",
    ).start()
    with pytest.raises(ProcessFailed, match="cannot bind: port in use"):
        proc.wait_http("http://127.0.0.1:1/ready", timeout_s=5)


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "p.log"
    proc = ManagedProcess("parent", [sys.executable, "-c", script], log_path=log).start()
    deadline = time.monotonic() + 5
    while not log.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(log.read_text().split()[0])
    assert pid_alive(child)
    assert stop_pid(proc.pid, timeout_s=5)
    deadline = time.monotonic() + 5
    while (pid_alive(proc.pid) or pid_alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(proc.pid)
    assert not pid_alive(child)  # the grandchild went with its group


def test_run_dir_ignores_garbage_pid_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_pid("gateway", 123456789, "gateway")
    (run.pids / "junk.pid").write_text("not a pid")
    assert run.recorded() == {"gateway": 123456789}
    assert run.alive() == {}
