"""The processes a bench run measures: Redis, a bare upstream, the auth service, the gateway.

The gateway routes ``/memory/*`` (made public) and ``/inference/*`` (authenticated) to the
same bare upstream, so "pass-through" and "authenticated" differ only in the gateway's work.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from switchboard_common.identity import Principal, sign_identity
from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess
from switchboard_devtools.redis_server import start_redis

# The auth service's defaults (argon2id t=3, m=64 MiB, p=4): reported with the login rate.
ARGON2 = {"AUTH_ARGON2_TIME_COST": "3", "AUTH_ARGON2_MEMORY_COST": "65536",
          "AUTH_ARGON2_PARALLELISM": "4"}  # fmt: skip


@dataclass
class BenchStack:
    logs: Path
    upstream: str = ""
    gateway: str = ""
    auth: str = ""
    user: str = "bench-user"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    token: str = ""
    sim: str = ""
    inference: str = ""
    stream_gateway: str = ""  # a second gateway whose /inference goes to the real service
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self) -> BenchStack:
        py = sys.executable
        secret = self.secret
        redis_port, up_port, auth_port, gw_port = (free_port() for _ in range(4))
        sim_port, inf_port, gw2_port = (free_port() for _ in range(3))
        self.processes.append(start_redis(redis_port, self.logs / "redis", self.logs / "redis.log"))
        redis = f"redis://127.0.0.1:{redis_port}"
        self.upstream = f"http://127.0.0.1:{up_port}"
        self.auth = f"http://127.0.0.1:{auth_port}"
        self.gateway = f"http://127.0.0.1:{gw_port}"
        self._spawn(
            "upstream",
            [py, "-m", "uvicorn", "benchmarks.upstream_app:app", "--port", str(up_port),
             "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            {}, self.upstream + "/memory/ping",
        )  # fmt: skip
        self._spawn(
            "auth",
            [py, "-m", "auth_service"],
            {"AUTH_PORT": str(auth_port), "AUTH_REDIS_URL": redis + "/0",
             "AUTH_DATA_DIR": str(self.logs / "auth-data"), "AUTH_LOG_LEVEL": "warning",
             "SWITCHBOARD_INTERNAL_SECRET": secret, **ARGON2},
            self.auth + "/ready",
        )  # fmt: skip
        self._spawn(
            "gateway",
            [py, "-m", "gateway"],
            {"GATEWAY_PORT": str(gw_port), "GATEWAY_MEMORY_URL": self.upstream,
             "GATEWAY_INFERENCE_URL": self.upstream, "GATEWAY_AUTH_URL": self.auth,
             "GATEWAY_REVOCATION_REDIS_URL": redis + "/0", "GATEWAY_LOG_LEVEL": "warning",
             "GATEWAY_PUBLIC_PATHS": "/memory/*", "SWITCHBOARD_INTERNAL_SECRET": secret,
             "GATEWAY_REDIS_URL": redis + "/3",
             # F1 is pure pass-through and A1 is authentication alone: no rate limits here
             # (the Gateway issue's G1 row will add them)
             "GATEWAY_ANONYMOUS_RATE_LIMIT": "0",
             "GATEWAY_RATE_LIMITS": "default=0"},
            self.gateway + "/ready",
        )  # fmt: skip
        self.sim = f"http://127.0.0.1:{sim_port}"
        self.inference = f"http://127.0.0.1:{inf_port}"
        self.stream_gateway = f"http://127.0.0.1:{gw2_port}"
        self._spawn("ollama-sim", [py, "-m", "ollama_sim", "--port", str(sim_port)], {},
                    self.sim + "/api/version")  # fmt: skip
        self._spawn(
            "inference",
            [py, "-m", "inference_service"],
            {"INFERENCE_PORT": str(inf_port), "INFERENCE_REDIS_URL": redis + "/1",
             "INFERENCE_OLLAMA_URLS": self.sim, "INFERENCE_LOG_LEVEL": "warning",
             "INFERENCE_QUEUE_DEFAULT_SLOTS": "4", "SWITCHBOARD_INTERNAL_SECRET": secret},
            self.inference + "/ready",
        )  # fmt: skip
        self._spawn(
            "gateway-stream",
            [py, "-m", "gateway"],
            {"GATEWAY_PORT": str(gw2_port), "GATEWAY_INFERENCE_URL": self.inference,
             "GATEWAY_AUTH_URL": self.auth, "GATEWAY_REDIS_URL": redis + "/3",
             "GATEWAY_REVOCATION_REDIS_URL": redis + "/0", "GATEWAY_LOG_LEVEL": "warning",
             "GATEWAY_RATE_LIMITS": "default=1000000000/minute",
             "SWITCHBOARD_INTERNAL_SECRET": secret},
            self.stream_gateway + "/ready",
        )  # fmt: skip
        self._login()
        return self

    def service_headers(self) -> dict[str, str]:
        """Identity headers as the gateway would sign them, for calling a service directly."""
        principal = Principal(sub="bench", username="bench", scope=["inference"])
        value, signature = sign_identity(principal, self.secret)
        return {"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], ready: str) -> None:
        proc = ManagedProcess(name, argv, log_path=self.logs / f"{name}.log", env=env).start()
        self.processes.append(proc)
        proc.wait_http(ready, timeout_s=60)

    def _login(self) -> None:
        form = {"username": self.user, "password": self.password}
        register = httpx.post(self.gateway + "/auth/register", json=form, timeout=10)
        register.raise_for_status()
        token = httpx.post(self.gateway + "/auth/token", data=form, timeout=10)
        token.raise_for_status()
        self.token = token.json()["access_token"]
        check = httpx.get(self.gateway + "/inference/ping", headers=self.auth_headers, timeout=5)
        check.raise_for_status()

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def new_stack() -> BenchStack:
    return BenchStack(logs=Path(tempfile.mkdtemp(prefix="switchboard-bench-"))).start()
