"""The processes a bench run measures: Redis, a bare upstream, the auth service, gateways.

The gateway routes ``/memory/*`` (made public) and ``/inference/*`` (authenticated) to the
same bare upstream, so "pass-through" and "authenticated" differ only in the gateway's work.

Two more gateways ("full", replicas of one configuration sharing one Redis) do everything
a production gateway does on ``/inference/*``: verify the JWT, rate-limit in Redis, and open
and export a span per request (to ``otlp_sink``); they also serve ``/gateway/verify`` for
Traefik (G2). A tier with a small limit (``R1_TIER``) is what R1 counts across them.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
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

# Every user gets tier "free", which falls to `default`: high enough never to answer 429 at
# bench rates, while each request still goes through the limiter (leases from Redis).
R1_TIER = "r1"
R1_LIMIT = 200  # per minute
FULL_RATE_LIMITS = f"default=1000000000/minute,{R1_TIER}={R1_LIMIT}/minute"


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
    bare_proxy: str = ""  # S1's floor: a proxy doing nothing else, in front of inference
    full_gateways: list[str] = field(default_factory=list)  # authenticated+limited+traced
    otlp_sink: str = ""
    redis: str = ""
    admin: str = "bench-admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    r1_user: str = "bench-r1"
    r1_token: str = ""
    r1_sub: str = ""
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    processes: list[ManagedProcess] = field(default_factory=list)
    _pending: list[tuple[ManagedProcess, str]] = field(default_factory=list)

    def start(self) -> BenchStack:
        """Everything or nothing: when one process fails to start, the others are stopped
        (they run in their own sessions, so nothing else would stop them)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> BenchStack:
        py = sys.executable
        secret = self.secret
        redis_port, up_port, auth_port, gw_port = (free_port() for _ in range(4))
        sim_port, inf_port, gw2_port = (free_port() for _ in range(3))
        self.processes.append(start_redis(redis_port, self.logs / "redis", self.logs / "redis.log"))
        redis = self.redis = f"redis://127.0.0.1:{redis_port}"
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
             "SWITCHBOARD_INTERNAL_SECRET": secret, **ARGON2,
             "AUTH_ADMIN_USERNAME": self.admin, "AUTH_ADMIN_PASSWORD": self.admin_password},
            self.auth + "/ready",
        )  # fmt: skip
        self._await_ready()  # gateways fetch the JWKS from auth as they start
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
        bare_port = free_port()
        self.bare_proxy = f"http://127.0.0.1:{bare_port}"
        self._spawn("bare-proxy", [py, "-m", "benchmarks.bare_proxy", "--port", str(bare_port)],
                    {"BARE_PROXY_UPSTREAM": f"127.0.0.1:{inf_port}"},
                    self.bare_proxy + "/ready")  # fmt: skip
        self._spawn("ollama-sim", [py, "-m", "ollama_sim", "--port", str(sim_port)], {},
                    self.sim + "/api/version")  # fmt: skip
        self._spawn(
            "inference",
            [py, "-m", "inference_service"],
            {"INFERENCE_PORT": str(inf_port), "INFERENCE_REDIS_URL": redis + "/1",
             "INFERENCE_OLLAMA_URLS": self.sim, "INFERENCE_LOG_LEVEL": "warning",
             "INFERENCE_QUEUE_DEFAULT_SLOTS": "4", "SWITCHBOARD_INTERNAL_SECRET": secret,
             # token-budget settlements go to the gateway that reserved them
             "INFERENCE_GATEWAY_URL": self.stream_gateway},
            self.inference + "/ready",
        )  # fmt: skip
        self._spawn(
            "gateway-stream",
            [py, "-m", "gateway"],
            {"GATEWAY_PORT": str(gw2_port), "GATEWAY_INFERENCE_URL": self.inference,
             "GATEWAY_MEMORY_URL": self.upstream,  # C1's plain proxied GET
             "GATEWAY_AUTH_URL": self.auth, "GATEWAY_REDIS_URL": redis + "/3",
             "GATEWAY_REVOCATION_REDIS_URL": redis + "/0", "GATEWAY_LOG_LEVEL": "warning",
             "GATEWAY_RATE_LIMITS": "default=1000000000/minute",
             # budgets are still reserved and settled, never exhausted by C1's hundreds/s
             "GATEWAY_TOKEN_LIMITS": "default=1000000000/minute",
             "SWITCHBOARD_INTERNAL_SECRET": secret},
            self.stream_gateway + "/ready",
        )  # fmt: skip
        self._start_full_gateways()
        self._await_ready()
        self._login()
        self._login_r1_user()
        return self

    def _start_full_gateways(self) -> None:
        py = sys.executable
        sink_port = free_port()
        self.otlp_sink = f"http://127.0.0.1:{sink_port}"
        self._spawn(
            "otlp-sink",
            [py, "-m", "uvicorn", "benchmarks.otlp_sink:app", "--port", str(sink_port),
             "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
             "--no-access-log", "--log-level", "warning"],
            {}, self.otlp_sink + "/stats",
        )  # fmt: skip
        env = {
            "GATEWAY_INFERENCE_URL": self.upstream, "GATEWAY_MEMORY_URL": self.upstream,
            "GATEWAY_AUTH_URL": self.auth, "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_REVOCATION_REDIS_URL": self.redis + "/0",
            "GATEWAY_REDIS_URL": self.redis + "/4",  # the replicas' one shared window
            "GATEWAY_RATE_LIMITS": FULL_RATE_LIMITS,
            # token budgets apply to generation POSTs only (U1 makes one); G1-G3 are GETs
            "GATEWAY_TOKEN_LIMITS": "default=1000000000/minute",
            "GATEWAY_FORWARD_AUTH_ENABLED": "true",
            "GATEWAY_TRACE_PROXY": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_sink,
            "SWITCHBOARD_INTERNAL_SECRET": self.secret,
        }  # fmt: skip
        for name in ("gateway-full-a", "gateway-full-b"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            self._spawn(name, [py, "-m", "gateway"], {**env, "GATEWAY_PORT": str(port)},
                        url + "/ready")  # fmt: skip
            self.full_gateways.append(url)

    def service_headers(self) -> dict[str, str]:
        """Identity headers as the gateway would sign them, for calling a service directly."""
        principal = Principal(sub="bench", username="bench", scope=["inference"])
        value, signature = sign_identity(principal, self.secret)
        return {"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], ready: str) -> None:
        """Start a process; `_await_ready` waits for all of them (they start in parallel:
        a dozen interpreters importing at once take far less than one after another)."""
        proc = ManagedProcess(name, argv, log_path=self.logs / f"{name}.log", env=env).start()
        self.processes.append(proc)
        self._pending.append((proc, ready))

    def _await_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        for proc, ready in self._pending:
            proc.wait_http(ready, timeout_s=max(1.0, deadline - time.monotonic()))
        self._pending.clear()

    def _login(self) -> None:
        form = {"username": self.user, "password": self.password}
        register = httpx.post(self.gateway + "/auth/register", json=form, timeout=10)
        register.raise_for_status()
        token = httpx.post(self.gateway + "/auth/token", data=form, timeout=10)
        token.raise_for_status()
        self.token = token.json()["access_token"]
        check = httpx.get(self.gateway + "/inference/ping", headers=self.auth_headers, timeout=5)
        check.raise_for_status()

    def _login_r1_user(self) -> None:
        """A fresh user on the R1 tier (set by the admin), so R1's window starts empty."""
        admin_form = {"username": self.admin, "password": self.admin_password}
        admin = httpx.post(self.gateway + "/auth/token", data=admin_form, timeout=10)
        admin.raise_for_status()
        admin_headers = {"Authorization": f"Bearer {admin.json()['access_token']}"}
        form = {"username": self.r1_user, "password": self.password}
        user = httpx.post(self.gateway + "/auth/register", json=form, timeout=10)
        user.raise_for_status()
        httpx.patch(
            f"{self.gateway}/auth/admin/users/{user.json()['id']}",
            json={"tier": R1_TIER}, headers=admin_headers, timeout=10,
        ).raise_for_status()  # fmt: skip
        token = httpx.post(self.gateway + "/auth/token", data=form, timeout=10)
        token.raise_for_status()  # a token issued after the change carries the new tier
        self.r1_token = token.json()["access_token"]
        self.r1_sub = str(user.json()["id"])

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pid_of(self, name: str) -> int:
        """The pid of the stack's process called ``name`` (e.g. ``gateway-stream``)."""
        (proc,) = [p for p in self.processes if p.name == name]
        return proc.pid

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def new_stack() -> BenchStack:
    return BenchStack(logs=Path(tempfile.mkdtemp(prefix="switchboard-bench-"))).start()
