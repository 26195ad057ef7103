"""``switchboard-dev up|down|status``: the cluster on this machine, no Docker needed.

``up`` starts Redis (unless ``SWITCHBOARD_REDIS_URL`` names one), the four services and the
gateway, waits until each is ready, writes PID files under the run folder and prints the
gateway URL. Running it again while the cluster is up changes nothing. ``down`` stops
exactly the processes recorded in the PID files. ``traefik-config`` prints (or writes) the
Traefik configuration generated from the gateway's route table (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.request
from pathlib import Path

from switchboard_devtools.cluster import ALL, GATEWAY, ClusterPlan, default_ports, start_cluster
from switchboard_devtools.process import ProcessFailed, http_ok, pid_alive, stop_pid
from switchboard_devtools.redis_server import redis_ping, start_redis

DEFAULT_REDIS_PORT = 6380  # not 6379: never collide with a Redis the machine already runs


class RunDir:
    """PID files and logs of one local cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pids = root / "pids"
        self.logs = root / "logs"

    def write_pid(self, name: str, pid: int, argv0: str) -> None:
        self.pids.mkdir(parents=True, exist_ok=True)
        (self.pids / f"{name}.pid").write_text(f"{pid}\n{argv0}\n")

    def recorded(self) -> dict[str, int]:
        found: dict[str, int] = {}
        if not self.pids.is_dir():
            return found
        for path in sorted(self.pids.glob("*.pid")):
            try:
                found[path.stem] = int(path.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                path.unlink(missing_ok=True)
        return found

    def alive(self) -> dict[str, int]:
        return {name: pid for name, pid in self.recorded().items() if pid_alive(pid)}

    def forget(self, name: str) -> None:
        (self.pids / f"{name}.pid").unlink(missing_ok=True)


ADMIN_FILE = "admin-credentials"
SIMULATOR_BANNER = (
    "\n  ************************************************************************\n"
    "  *  No Ollama answered at OLLAMA_URL: starting the Ollama SIMULATOR.    *\n"
    "  *  Answers are SIMULATED (deterministic filler text), not a real LLM.  *\n"
    "  *  Start Ollama (ollama serve) and run make up again for real models.  *\n"
    "  ************************************************************************\n"
)


def real_ollama() -> str | None:
    """OLLAMA_URL (default http://127.0.0.1:11434) when a real Ollama answers there."""
    url = os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434").rstrip("/")
    try:
        with urllib.request.urlopen(url + "/api/version", timeout=1) as resp:  # noqa: S310
            version = json.loads(resp.read()).get("version", "")
    except (OSError, ValueError):
        return None
    if not isinstance(version, str) or version.endswith("-sim"):
        return None  # a simulator left running is not a real model
    return url


def admin_credentials(run: RunDir) -> tuple[str, str]:
    """The first admin of this local cluster: from AUTH_ADMIN_* if set, else generated once
    and kept (mode 0600) under the run folder, so it survives make down/up with the data."""
    user = os.environ.get("AUTH_ADMIN_USERNAME")
    password = os.environ.get("AUTH_ADMIN_PASSWORD")
    if user and password:
        return user, password
    path = run.root / ADMIN_FILE
    if path.is_file():
        saved_user, _, saved_password = path.read_text().strip().partition(":")
        if saved_user and saved_password:
            return saved_user, saved_password
    user, password = "admin", secrets.token_urlsafe(18)
    run.root.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{user}:{password}\n")
    path.chmod(0o600)
    return user, password


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_up(run: RunDir) -> int:
    ports = default_ports()
    gateway_url = f"http://127.0.0.1:{ports['gateway']}"
    alive = run.alive()
    if alive and http_ok(gateway_url + "/health?strict=true"):
        _say(f"Switchboard is already up at {gateway_url} (nothing to do; `make down` stops it).")
        return 0
    if alive:
        _say("A previous cluster is half up; stopping it first.")
        cmd_down(run, quiet=True)

    t0 = time.monotonic()
    redis_url = os.environ.get("SWITCHBOARD_REDIS_URL", "").rstrip("/")
    if not redis_url:
        port = int(os.environ.get("SWITCHBOARD_REDIS_PORT", DEFAULT_REDIS_PORT))
        if redis_ping("127.0.0.1", port):
            _say(f"→ Redis already answers on 127.0.0.1:{port}; using it")
        else:
            _say(f"→ starting Redis on 127.0.0.1:{port}")
            try:
                redis = start_redis(port, run.root / "redis", run.logs / "redis.log", persist=True)
            except (ProcessFailed, RuntimeError) as exc:
                _say(f"✗ Redis did not start: {exc}")
                return 1
            run.write_pid("redis", redis.pid, "redis-server")
        redis_url = f"redis://127.0.0.1:{port}"
    else:
        _say(f"→ using Redis at {redis_url}")

    ollama_url = real_ollama()
    if ollama_url:
        _say(f"→ using the Ollama at {ollama_url}")
    else:
        _say(SIMULATOR_BANNER)
    _say("→ starting auth, inference, knowledge, memory, then the gateway")
    admin_user, admin_password = admin_credentials(run)
    plan = ClusterPlan(
        run_dir=run.root,
        ports=ports,
        redis_url=redis_url,
        extra_env={"AUTH_ADMIN_USERNAME": admin_user, "AUTH_ADMIN_PASSWORD": admin_password},
        internal_secret=os.environ.get("SWITCHBOARD_INTERNAL_SECRET") or secrets.token_urlsafe(32),
        ollama_url=ollama_url,
        simulator_port=int(os.environ.get("SWITCHBOARD_SIMULATOR_PORT", 11435)),
    )
    try:
        started = start_cluster(
            plan, timeout_s=float(os.environ.get("SWITCHBOARD_UP_TIMEOUT", 60)), progress=True
        )
    except ProcessFailed as exc:
        _say(f"✗ {exc}")
        cmd_down(run, quiet=True)
        return 1
    for name, proc in started.items():
        run.write_pid(name, proc.pid, proc.argv[-1])

    _say(
        "\n"
        "  ┌──────────────────────────────────────────────────────────────┐\n"
        f"  │  Switchboard is up ({time.monotonic() - t0:4.1f}s)                                │\n"
        f"  │  Gateway: {gateway_url:<51}│\n"
        f"  │  API docs: {gateway_url + '/docs':<50}│\n"
        "  └──────────────────────────────────────────────────────────────┘\n"
        f"  Try:   curl -s {gateway_url}/health\n"
        f"  Admin: {admin_user} / password in {run.root / ADMIN_FILE}  (docs/auth.md)\n"
        f"  Logs:  {run.logs}/   Stop: make down\n"
    )
    return 0


def cmd_down(run: RunDir, *, quiet: bool = False) -> int:
    recorded = run.recorded()
    if not recorded:
        if not quiet:
            _say("Nothing to stop (no PID files under " + str(run.pids) + ").")
        return 0
    order = [GATEWAY.name, *(s.name for s in ALL if s is not GATEWAY), "ollama-sim", "redis"]
    for name in sorted(recorded, key=lambda n: order.index(n) if n in order else len(order)):
        pid = recorded[name]
        if stop_pid(pid):
            if not quiet:
                _say(f"  stopped {name} (pid {pid})")
        elif not quiet:
            _say(f"  {name} (pid {pid}) was not running")
        run.forget(name)
    return 0


def cmd_status(run: RunDir) -> int:
    recorded = run.recorded()
    if not recorded:
        _say("Switchboard is not running (no PID files).")
        return 1
    for name, pid in recorded.items():
        _say(f"  {name:<10} pid {pid:<8} {'running' if pid_alive(pid) else 'dead'}")
    return 0 if all(pid_alive(p) for p in recorded.values()) else 1


def cmd_traefik_config(args: argparse.Namespace) -> int:
    # Imported here: it loads the gateway's route table, which up/down/status never need.
    from switchboard_devtools.traefik import write_config

    return write_config(args.out, gateway=args.gateway, services=args.service, redis=args.redis)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard-dev", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "traefik-config"])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("SWITCHBOARD_RUN_DIR", ".run")),
        help="Where PID files, logs and Redis data go (default .run, git-ignored).",
    )
    traefik = parser.add_argument_group("traefik-config (docs/deploy.md, Traefik in front)")
    traefik.add_argument("--out", type=Path, help="Write here instead of stdout.")
    traefik.add_argument("--gateway", help="The gateway origin forwardAuth asks.")
    traefik.add_argument(
        "--service", action="append", default=[], metavar="NAME=URL[,URL…]",
        help="A service's replicas (repeatable); unnamed services keep the compose defaults.",
    )  # fmt: skip
    traefik.add_argument("--redis", help="host:port[/db] for shared buckets; 'none': in memory.")
    args = parser.parse_args(argv)
    if args.command == "traefik-config":
        return cmd_traefik_config(args)
    run = RunDir(args.run_dir.resolve())
    if args.command == "up":
        return cmd_up(run)
    if args.command == "down":
        return cmd_down(run)
    return cmd_status(run)


if __name__ == "__main__":
    sys.exit(main())
