"""Resilience toward services: several instances, round-robin, per-instance circuit breaker,
retries of idempotent requests only before the response started.

Real processes: a gateway and two echo upstreams (A and B, real service apps on uvicorn),
plus scripted instances run in this process (``ScriptedInstance``: a TCP server that
counts every connection it accepts and then resets it, answers 200, or sends a response
head and one chunk and dies), so connection attempts can be counted exactly.

Routing in the stack: memory → A,B; inference → A,C (C scripted); knowledge → D (scripted,
single instance). Each scenario has its own service, so breaker states do not mix; the
test that kills B comes last among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import aiohttp
import httpx
import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.services.balancer import CLOSED, HALF_OPEN, OPEN, Balancer, Instance, backoff_s
from gateway.services.upstreams import UpstreamPool
from switchboard_common.lean_http import UpstreamClient
from switchboard_devtools.ports import free_port
from switchboard_devtools.process import ManagedProcess
from tests.fixtures.processes import Spawn, module_argv

THRESHOLD = 3
OPEN_S = 1.0


class ScriptedInstance:
    """A TCP server that counts accepted connections and answers as its ``mode`` says:
    ``reset`` (RST at once: a crashed instance the kernel still accepts for), ``ok``
    (a 200 with ``connection: close``), ``head_then_die`` (a chunked 200 head and one
    chunk, then the connection drops)."""

    def __init__(self, mode: str = "reset", port: int = 0) -> None:
        self.mode = mode
        self.accepted = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(128)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            with contextlib.suppress(OSError), conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        conn.settimeout(2)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return
            data += piece
        if self.mode == "ok":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                b"connection: close\r\n\r\n{}"
            )
        else:  # head_then_die
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n"
                b"transfer-encoding: chunked\r\n\r\n6\r\npart1\n\r\n"
            )
            time.sleep(0.2)  # let the gateway relay head and chunk before the cut
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self) -> None:
        self._sock.close()


@dataclass
class Stack:
    gateway: str
    a: str
    b: str
    b_port: int
    b_proc: ManagedProcess
    c: ScriptedInstance
    d: ScriptedInstance


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn) -> Iterator[Stack]:
    a_port, b_port, gw_port = free_port(), free_port(), free_port()
    a, b = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    # started together, then awaited: three interpreter start-ups in parallel, not in turn
    procs = [
        module_spawn(
            f"echo-{name}", module_argv("tests.support.echo_upstream"), env={"ECHO_PORT": str(port)}
        )
        for name, port in (("a", a_port), ("b", b_port))
    ]
    c, d = ScriptedInstance("reset"), ScriptedInstance("head_then_die")
    gateway = f"http://127.0.0.1:{gw_port}"
    gateway_proc = module_spawn(
        "gateway",
        module_argv("gateway"),
        env={
            "GATEWAY_PORT": str(gw_port),
            "GATEWAY_MEMORY_URL": f"{a}, {b}",
            "GATEWAY_INFERENCE_URL": f"{a},{c.url}",
            "GATEWAY_KNOWLEDGE_URL": d.url,
            "GATEWAY_AUTH_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
            "GATEWAY_CONNECT_TIMEOUT_S": "1",
            "GATEWAY_READ_TIMEOUT_S": "2",
            "GATEWAY_BREAKER_FAILURES": str(THRESHOLD),
            "GATEWAY_BREAKER_OPEN_S": str(OPEN_S),
            "GATEWAY_RETRY_ATTEMPTS": "2",
            "GATEWAY_RETRY_BACKOFF_BASE_S": "0.01",
            "GATEWAY_RETRY_BACKOFF_CAP_S": "0.05",
            "GATEWAY_HEALTH_TIMEOUT_S": "0.5",
            "GATEWAY_PUBLIC_PATHS": "/memory/*,/inference/*,/knowledge/*",
            "GATEWAY_ANONYMOUS_RATE_LIMIT": "0",
        },
    )
    for proc, url in ((procs[0], a), (procs[1], b), (gateway_proc, gateway)):
        proc.wait_http(url + "/ready", 60)
    yield Stack(gateway=gateway, a=a, b=b, b_port=b_port, b_proc=procs[1], c=c, d=d)
    c.close()
    d.close()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway, timeout=10) as c:
        yield c


def answered_by(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    host = next(v for k, v in resp.json()["headers"] if k == "host")
    return f"http://{host}"


def echo_count(origin: str) -> int:
    """Echo requests an instance served, asked directly (not through the gateway)."""
    return int(httpx.get(origin + "/memory/stream-stats", timeout=5).json()["echo_requests"])


def breaker_gauge(client: httpx.Client, service: str, origin: str) -> float:
    labels = f'instance="{origin}",service="{service}"'
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("switchboard_gateway_upstream_breaker_state{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no breaker gauge for {service} {origin}")


# --- through real processes --------------------------------------------------------------


def test_round_robin_spreads_requests_across_instances(stack: Stack, client: httpx.Client) -> None:
    seen = [answered_by(client.get("/memory/echo")) for _ in range(20)]
    assert seen.count(stack.a) == 10
    assert seen.count(stack.b) == 10
    assert all(x != y for x, y in itertools.pairwise(seen))  # strictly alternating


def test_breaker_opens_stops_traffic_probes_once_and_closes(
    stack: Stack, client: httpx.Client
) -> None:
    c = stack.c
    c.mode = "reset"
    # GETs that land on C are retried on A: the client never sees C's failures.
    for _ in range(20):
        assert client.get("/inference/echo").status_code == 200
        if c.accepted >= THRESHOLD:
            break
    assert c.accepted == THRESHOLD
    assert breaker_gauge(client, "inference", c.url) == OPEN

    # Open: C gets no connection attempt at all.
    for _ in range(10):
        assert answered_by(client.get("/inference/echo")) == stack.a
    time.sleep(0.1)
    assert c.accepted == THRESHOLD

    # Cooldown over: concurrent requests, exactly one of them probes C (and is retried).
    time.sleep(OPEN_S + 0.1)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: client.get("/inference/echo").status_code, range(8)))
    assert statuses == [200] * 8
    time.sleep(0.1)
    assert c.accepted == THRESHOLD + 1
    assert breaker_gauge(client, "inference", c.url) == OPEN  # the probe failed: open again

    # C recovers: the next probe succeeds and closes the breaker; traffic is shared again.
    c.mode = "ok"
    time.sleep(OPEN_S + 0.1)
    for _ in range(10):
        assert client.get("/inference/echo").status_code == 200
    assert breaker_gauge(client, "inference", c.url) == CLOSED
    assert c.accepted >= THRESHOLD + 1 + 4  # about half of the 10


def test_no_retry_after_the_response_started(stack: Stack, client: httpx.Client) -> None:
    d = stack.d
    before = d.accepted
    with client.stream("GET", "/knowledge/stream") as resp:
        assert resp.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in resp.iter_raw():
                pass
    time.sleep(0.2)
    assert d.accepted == before + 1  # a GET, yet not sent again: bytes had reached the client


def test_killed_instance_get_is_retried_post_is_not(stack: Stack, client: httpx.Client) -> None:
    """Kill B: GETs keep succeeding (retried on A); a POST that lands on B fails and is not
    sent again; B's breaker opens; B comes back and gets traffic after the cooldown."""
    for _ in range(4):  # keep-alive connections to both instances in the gateway's pool
        client.get("/memory/echo")
    stack.b_proc.kill()  # SIGKILL: a crash, no graceful shutdown

    a_before = echo_count(stack.a)
    posts = [client.post("/memory/echo", content=b"once") for _ in range(2)]
    codes = sorted(p.status_code for p in posts)
    assert codes[0] == 200 and codes[1] in (502, 503), [p.text for p in posts]
    assert echo_count(stack.a) == a_before + 1  # the failed POST was not replayed on A

    for _ in range(2 * THRESHOLD):
        assert answered_by(client.get("/memory/echo")) == stack.a  # retried, invisibly
    assert breaker_gauge(client, "memory", stack.b) == OPEN

    health = client.get("/health").json()
    memory = health["upstreams"]["memory"]
    assert health["status"] == "degraded"
    assert memory["status"] == "ok"  # A still serves
    assert memory["instances"][stack.b]["status"] == "down"
    assert memory["instances"][stack.b]["breaker"] == "open"

    # B is back (a scripted stand-in on its port: a second interpreter start-up would
    # double this test's time): after the cooldown the probe succeeds and B gets its share.
    back = ScriptedInstance("ok", port=stack.b_port)
    try:
        time.sleep(OPEN_S + 0.1)
        assert [client.get("/memory/echo").status_code for _ in range(6)] == [200] * 6
        assert back.accepted >= 2
        assert breaker_gauge(client, "memory", stack.b) == CLOSED
    finally:
        back.close()


# --- the pieces on their own -----------------------------------------------------------


def test_backoff_is_full_jitter_within_the_capped_window() -> None:
    samples = [backoff_s(3, 0.1, 1.0) for _ in range(2000)]
    assert all(0.0 <= s <= 0.4 for s in samples)  # window: base * 2^(3-1)
    assert min(samples) < 0.04 and max(samples) > 0.36  # spread over the whole window
    assert len(set(samples)) > 1900  # jitter: no two clients wait the same
    assert all(0.0 <= backoff_s(20, 0.1, 1.0) <= 1.0 for _ in range(200))  # capped


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def balancer(n: int, clock: FakeClock) -> Balancer:
    instances = [
        Instance(
            "unit",
            f"http://127.0.0.1:{9000 + i}",
            UpstreamClient("127.0.0.1", 9000 + i, connect_timeout_s=1, keepalive_s=1),
        )
        for i in range(n)
    ]
    return Balancer("unit", instances, failure_threshold=2, open_s=5.0, clock=clock)


def test_breaker_state_machine() -> None:
    clock = FakeClock()
    lb = balancer(2, clock)
    a, b = lb.instances
    assert [lb.pick(), lb.pick(), lb.pick()] == [a, b, a]

    lb.failed(b)
    assert b.state == CLOSED  # one failure is not a pattern
    lb.succeeded(b)
    lb.failed(b)
    assert b.state == CLOSED  # a success in between resets the count: consecutive only
    lb.failed(b)
    assert b.state == OPEN
    assert [lb.pick() for _ in range(4)] == [a] * 4
    assert lb.peek() is a

    clock.now += 5.0  # cooldown over: one probe, and only one
    probes = [lb.pick() for _ in range(4)]
    assert probes.count(b) == 1 and b.state == HALF_OPEN
    lb.abandoned(b)  # the probe's client left: no verdict, the next request probes
    assert b in [lb.pick(), lb.pick()]
    lb.failed(b)  # probe failed: open again for a full cooldown
    assert b.state == OPEN and b.open_until == clock.now + 5.0

    clock.now += 5.0
    assert b in [lb.pick(), lb.pick()]
    lb.succeeded(b)
    assert b.state == CLOSED and b.failures == 0


def test_all_open_means_no_pick_and_a_retry_after() -> None:
    clock = FakeClock()
    lb = balancer(2, clock)
    a, b = lb.instances
    for _ in range(2):
        lb.failed(a)
    clock.now += 2.0
    for _ in range(2):
        lb.failed(b)
    assert lb.pick() is None
    assert lb.retry_after_s() == 3  # a's cooldown ends first
    assert lb.peek() is a  # outside the proxy: the one back soonest
    clock.now += 3.0
    assert lb.pick() is a


def test_pick_other_prefers_another_instance() -> None:
    lb = balancer(3, FakeClock())
    a, b, c = lb.instances
    assert lb.pick() is a
    assert lb.pick_other(b) is c  # next in turn would be b, which just failed
    single = balancer(1, FakeClock())
    assert single.pick_other(single.instances[0]) is single.instances[0]


def test_pick_other_never_strands_a_probe() -> None:
    """A retry's pick that lands on the failed instance just past its cooldown must not leave
    it half-open with a probe nobody runs (it would be skipped for good)."""
    clock = FakeClock()
    lb = balancer(2, clock)
    a, b = lb.instances
    lb.failed(a)
    lb.failed(a)
    assert a.state == OPEN
    clock.now += 5.0  # cooldown over while the retry's backoff ran; a is next in turn
    assert lb.pick_other(a) is b  # its first pick made a the probe, then chose b
    assert a.state == HALF_OPEN and not a.probing  # released
    assert a in [lb.pick(), lb.pick()]  # the next request probes a


def test_a_connected_probe_lets_others_ride_along_only_when_nothing_else_can() -> None:
    """A slow probe (a stream waiting for its first token) must not make a single-instance
    service refuse everyone; with a closed instance around, the probe stays alone."""
    clock = FakeClock()
    single = balancer(1, clock)
    (only,) = single.instances
    single.failed(only)
    single.failed(only)
    clock.now += 5.0
    assert single.pick() is only and only.probing  # the probe
    assert single.pick() is None  # not connected yet: refused (503) as before
    single.connected(only)
    assert single.pick() is only  # rides along with the connected probe
    single.failed(only)  # a failure while half-open re-opens it
    assert only.state == OPEN and single.pick() is None

    lb = balancer(2, clock)
    a, b = lb.instances
    lb.failed(b)
    lb.failed(b)
    clock.now += 5.0
    assert b in [lb.pick(), lb.pick()] and b.probing
    lb.connected(b)
    assert [lb.pick() for _ in range(4)] == [a] * 4  # a closed instance takes the rest
    lb.succeeded(b)
    assert b.state == CLOSED and not b.probe_connected


def test_service_urls_accept_several_instances() -> None:
    settings = Settings(memory_url=" http://a:1, http://b/ ", auth_url="http://auth:8001/")
    assert settings.upstream_origins()["memory"] == ("http://a:1", "http://b:80")
    assert settings.upstream_origins()["auth"] == ("http://auth:8001",)
    assert settings.upstream_urls()["auth"] == "http://auth:8001"  # one origin: as before
    for bad in ("http://a:1,https://b:2", "http://a:1,http://a:1", " , ", "http://a:1/x"):
        with pytest.raises(ValidationError, match="_url"):
            Settings(memory_url=bad)


def test_calls_outside_the_proxy_feed_the_breaker_and_move_on() -> None:
    """API-key checks and WebSocket connects (UpstreamPool.attempt): a refused connect
    counts against that instance and the call goes to another one."""
    dead, alive = "http://127.0.0.1:1", "http://127.0.0.1:2"
    pool = UpstreamPool(Settings(auth_url=f"{dead},{alive}", breaker_failures=2))
    calls: list[str] = []

    async def call(origin: str) -> str:
        calls.append(origin)
        if origin == dead:
            raise aiohttp.ClientConnectorError(None, OSError(111, "refused"))  # type: ignore[arg-type]
        return "ok"

    async def run() -> None:
        for _ in range(4):
            assert await pool.attempt("auth", call) == "ok"

    asyncio.run(run())
    first = pool.balancers["auth"].instances[0]
    assert first.origin == dead and first.state == OPEN  # two refusals opened it
    assert calls.count(dead) == 2 and calls.count(alive) == 4  # then it was skipped
    only = UpstreamPool(Settings(auth_url=dead))
    with pytest.raises(aiohttp.ClientConnectorError):  # nowhere else to go: the caller's
        asyncio.run(only.attempt("auth", call))
