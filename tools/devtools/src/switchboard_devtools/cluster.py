"""The Switchboard cluster as data: which processes, which ports, which environment.

``ClusterPlan`` turns ports and a Redis URL into one ``ManagedProcess`` per service, with
the environment each needs (its port, its Redis database, the gateway's upstream URLs).
``start_cluster`` starts the services in parallel, waits for each ``/ready``, then starts
the gateway and waits until it sees every service healthy.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from switchboard_devtools.process import ManagedProcess, ProcessFailed


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    env_prefix: str
    default_port: int
    redis_db: int | None  # the Redis database this service owns (None: uses no Redis)


GATEWAY = ServiceSpec("gateway", "gateway", "GATEWAY_", 8000, None)
GATEWAY_REDIS_DB = 3  # rate limits and caches (Gateway issue)
AUTH = ServiceSpec("auth", "auth_service", "AUTH_", 8001, 0)
SERVICES: tuple[ServiceSpec, ...] = (
    AUTH,
    ServiceSpec("inference", "inference_service", "INFERENCE_", 8002, 1),
    ServiceSpec("knowledge", "knowledge_service", "KNOWLEDGE_", 8003, None),
    ServiceSpec("memory", "memory_service", "MEMORY_", 8004, 2),
)
ALL: tuple[ServiceSpec, ...] = (*SERVICES, GATEWAY)


def default_ports(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    """Ports from ``<PREFIX>PORT`` env vars (the services' own setting), else the defaults."""
    return {s.name: int(environ.get(f"{s.env_prefix}PORT", s.default_port)) for s in ALL}


@dataclass
class ClusterPlan:
    run_dir: Path
    ports: dict[str, int]
    redis_url: str  # base URL without a database, e.g. redis://127.0.0.1:6380
    extra_env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    # One per cluster run, shared by the gateway and every service: no well-known HMAC key
    # even on a developer machine (a local process could otherwise forge identities).
    internal_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # A real Ollama to use; None starts the simulator on ``simulator_port``.
    ollama_url: str | None = None
    simulator_port: int = 11435

    @property
    def ollama(self) -> str:
        return self.ollama_url or f"http://{self.host}:{self.simulator_port}"

    def simulator_process(self) -> ManagedProcess:
        return ManagedProcess(
            "ollama-sim",
            [sys.executable, "-m", "ollama_sim", "--host", self.host,
             "--port", str(self.simulator_port)],
            log_path=self.run_dir / "logs" / "ollama-sim.log",
        )  # fmt: skip

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def env_for(self, spec: ServiceSpec) -> dict[str, str]:
        p = spec.env_prefix
        env = {
            f"{p}HOST": self.host,
            f"{p}PORT": str(self.ports[spec.name]),
            "PYTHONUNBUFFERED": "1",
        }
        if spec.redis_db is not None:
            env[f"{p}REDIS_URL"] = f"{self.redis_url}/{spec.redis_db}"
        if spec.name == "inference":
            env["INFERENCE_OLLAMA_URLS"] = self.ollama
        if spec.name == "auth":  # users, sessions and signing keys survive make down/up
            env["AUTH_DATA_DIR"] = str(self.run_dir / "data" / "auth")
        if spec is GATEWAY:
            for service in SERVICES:
                env[f"GATEWAY_{service.name.upper()}_URL"] = self.url(service.name)
            env["GATEWAY_REDIS_URL"] = f"{self.redis_url}/{GATEWAY_REDIS_DB}"
            # revoked sessions are the auth service's data, read from its database
            env["GATEWAY_REVOCATION_REDIS_URL"] = f"{self.redis_url}/{AUTH.redis_db}"
        env["SWITCHBOARD_INTERNAL_SECRET"] = self.internal_secret
        env.update(self.extra_env)
        return env

    def process(self, spec: ServiceSpec) -> ManagedProcess:
        return ManagedProcess(
            spec.name,
            [sys.executable, "-m", spec.module],
            log_path=self.run_dir / "logs" / f"{spec.name}.log",
            env=self.env_for(spec),
        )


def start_cluster(
    plan: ClusterPlan, *, timeout_s: float = 60.0, progress: bool = False
) -> dict[str, ManagedProcess]:
    """Start every service and the gateway; stop what started if anything fails."""
    started: dict[str, ManagedProcess] = {}
    try:
        if plan.ollama_url is None:
            sim = started["ollama-sim"] = plan.simulator_process().start()
            sim.wait_http(plan.ollama + "/api/version", timeout_s)
            if progress:
                print(f"  ✓ {'ollama-sim':<10} {plan.ollama}  (SIMULATED MODEL)", flush=True)
        for spec in SERVICES:
            started[spec.name] = plan.process(spec).start()
        for spec in SERVICES:
            started[spec.name].wait_http(plan.url(spec.name) + "/ready", timeout_s)
            if progress:
                print(f"  ✓ {spec.name:<10} {plan.url(spec.name)}", flush=True)
        started[GATEWAY.name] = plan.process(GATEWAY).start()
        started[GATEWAY.name].wait_http(plan.url(GATEWAY.name) + "/health?strict=true", timeout_s)
        if progress:
            print(f"  ✓ {'gateway':<10} {plan.url('gateway')}", flush=True)
    except (ProcessFailed, OSError):
        stop_all(started)
        raise
    return started


def stop_all(processes: Mapping[str, ManagedProcess]) -> None:
    """Gateway first (no new traffic), then the services, the simulator last."""
    order = [GATEWAY.name, *(s.name for s in SERVICES), "ollama-sim"]
    for name in sorted(processes, key=lambda n: order.index(n) if n in order else len(order)):
        processes[name].stop()
