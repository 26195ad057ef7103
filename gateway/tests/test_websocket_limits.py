"""WebSocket limits and close codes, through a real gateway process.

``memory`` routes to the echo upstream (a real service on uvicorn). ``knowledge`` routes
to a scripted upstream (a ``websockets`` server in this process) whose paths misbehave on
purpose and which records how each of its sockets ended, so a test can see what the
gateway did to the upstream side too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import websockets
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import Server, ServerConnection, serve

from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, spawn_echo, spawn_gateway

MAX_MESSAGE = 1024
IDLE_S = 1.0


@dataclass
class Scripted:
    """The scripted upstream: path → behaviour; ``ended`` has (path, close code) per socket."""

    port: int
    ended: list[tuple[str, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, conn: ServerConnection) -> None:
        path = conn.request.path if conn.request else ""
        try:
            if path.endswith("/drop"):  # dies without a close frame, like a killed process
                conn.send("about to die")
                conn.socket.close()
                return
            if path.endswith("/big"):
                conn.send("x" * (MAX_MESSAGE * 4))
            for message in conn:  # echo until the gateway closes us
                conn.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            received = conn.protocol.close_rcvd
            code = received.code if received else None
            with self.lock:
                self.ended.append((path, code))

    def wait_ended(self, path: str, timeout_s: float = 3.0) -> int | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                for seen, code in self.ended:
                    if seen == path:
                        return code
            time.sleep(0.02)
        raise AssertionError(f"the upstream socket for {path} was never closed")


@dataclass
class Stack:
    gateway: str
    scripted: Scripted

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://")


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    script = Scripted(port=free_port())
    server: Server = serve(script.handler, "127.0.0.1", script.port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, scripted: Scripted) -> Stack:
    upstream = spawn_echo(module_spawn)
    gateway, _ = spawn_gateway(
        module_spawn,
        {
            "GATEWAY_MEMORY_URL": upstream,
            "GATEWAY_INFERENCE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
            "GATEWAY_KNOWLEDGE_URL": f"http://127.0.0.1:{scripted.port}",
            "GATEWAY_AUTH_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_WS_MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
            "GATEWAY_WS_IDLE_TIMEOUT_S": str(IDLE_S),
            "GATEWAY_PUBLIC_PATHS": "/memory/*,/knowledge/*,/inference/*",
        },
    )
    return Stack(gateway, scripted)


def _closed(ws: websockets.sync.client.ClientConnection) -> websockets.ConnectionClosed:
    """Read until the gateway closes the socket."""
    for _ in range(10):
        try:
            ws.recv(timeout=5)
        except websockets.ConnectionClosed as exc:
            return exc
    raise AssertionError("the socket stayed open")


def _close_code(exc: websockets.ConnectionClosed) -> tuple[int | None, str]:
    assert exc.rcvd is not None, "the gateway dropped the socket without a close frame"
    return exc.rcvd.code, exc.rcvd.reason


# --- message size --------------------------------------------------------------------------


def test_message_at_the_limit_passes(stack: Stack) -> None:
    with ws_connect(stack.ws + "/knowledge/exact", open_timeout=5) as ws:
        ws.send(b"b" * MAX_MESSAGE)
        assert ws.recv(timeout=5) == b"b" * MAX_MESSAGE
        text = "é" * (MAX_MESSAGE // 2)  # 2 bytes each in UTF-8: exactly the limit
        ws.send(text)
        assert ws.recv(timeout=5) == text


@pytest.mark.parametrize("payload", [b"b" * (MAX_MESSAGE + 1), "é" * (MAX_MESSAGE // 2 + 1)])
def test_client_message_over_the_limit_closes_1009_both_sides(
    stack: Stack, payload: str | bytes
) -> None:
    path = f"/knowledge/hold-{type(payload).__name__}"
    with ws_connect(stack.ws + path, open_timeout=5) as ws:
        ws.send("fine")
        assert ws.recv(timeout=5) == "fine"
        ws.send(payload)
        code, reason = _close_code(_closed(ws))
    assert code == 1009
    # uvicorn refuses the frame before buffering it (ws_max_size = the gateway's limit)
    assert f"{MAX_MESSAGE} bytes" in reason
    assert stack.scripted.wait_ended(path) == 1009  # the upstream was closed, not leaked


def test_upstream_message_over_the_limit_closes_1009(stack: Stack) -> None:
    with ws_connect(stack.ws + "/knowledge/big", open_timeout=5) as ws:
        code, reason = _close_code(_closed(ws))
    assert code == 1009
    assert reason.startswith("upstream message too big")


# --- idle timeout --------------------------------------------------------------------------


def test_idle_socket_is_closed_1001_both_sides(stack: Stack) -> None:
    started = time.monotonic()
    with ws_connect(stack.ws + "/knowledge/idle", open_timeout=5) as ws:
        code, reason = _close_code(_closed(ws))
    elapsed = time.monotonic() - started
    assert (code, reason) == (1001, "idle timeout")
    assert IDLE_S * 0.9 <= elapsed < IDLE_S + 2
    assert stack.scripted.wait_ended("/knowledge/idle") == 1001


def test_traffic_either_way_keeps_a_socket_open(stack: Stack) -> None:
    with ws_connect(stack.ws + "/memory/ws", open_timeout=5) as ws:
        deadline = time.monotonic() + IDLE_S * 2.5
        while time.monotonic() < deadline:
            ws.send("tick")
            assert ws.recv(timeout=5) == "echo:tick"
            time.sleep(IDLE_S / 3)


# --- close codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream_code", "client_code"),
    [(1000, 1000), (4001, 4001), (1008, 1008), (1001, 1012), (1012, 1012), (1013, 1013)],
)
def test_upstream_close_codes_reach_the_client(
    stack: Stack, upstream_code: int, client_code: int
) -> None:
    with ws_connect(stack.ws + "/memory/ws", open_timeout=5) as ws:
        ws.send(f"close:{upstream_code}")
        code, _ = _close_code(_closed(ws))
    assert code == client_code


def test_upstream_dying_mid_session_is_1011(stack: Stack) -> None:
    with ws_connect(stack.ws + "/knowledge/drop", open_timeout=5) as ws:
        assert ws.recv(timeout=5) == "about to die"
        code, reason = _close_code(_closed(ws))
    assert (code, reason) == (1011, "upstream connection lost")


def test_client_leaving_closes_the_upstream_promptly(stack: Stack) -> None:
    with ws_connect(stack.ws + "/knowledge/leave", open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.close(code=4100)
    assert stack.scripted.wait_ended("/knowledge/leave", timeout_s=IDLE_S * 0.8) == 4100


def test_client_dropping_the_tcp_connection_closes_the_upstream(stack: Stack) -> None:
    with ws_connect(stack.ws + "/knowledge/vanish", open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
        ws.socket.close()  # no close frame
    code = stack.scripted.wait_ended("/knowledge/vanish", timeout_s=IDLE_S * 0.8)
    # uvicorn reports a lost connection as 1005 (no status), indistinguishable from a close
    # frame without a code; either way a code that may be sent reaches the upstream
    assert code in (1000, 1001)


def test_upstream_refusing_the_handshake_is_relayed(stack: Stack) -> None:
    # the echo service has no WebSocket at this path: its server answers 403
    with pytest.raises(websockets.InvalidStatus) as info:
        ws_connect(stack.ws + "/memory/no-such-socket", open_timeout=5)
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert "refused the WebSocket handshake" in json.loads(response.body)["detail"]


def test_upstream_down_is_503_problem_at_the_handshake(stack: Stack) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        ws_connect(stack.ws + "/inference/ws", open_timeout=5)
    response = info.value.response
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.body)["type"] == "urn:switchboard:problem:service-unavailable"


def test_gateway_still_serves_after_all_of_the_above(stack: Stack) -> None:
    with ws_connect(stack.ws + "/memory/ws", open_timeout=5) as ws:
        ws.send("still here")
        assert ws.recv(timeout=5) == "echo:still here"
