"""Hostile and broken requests against a real gateway process: each gets a clear answer
(a problem, a 400 from the HTTP parser, a close), nothing forged reaches a service, and
the gateway keeps serving everyone else.

Raw sockets where an HTTP client would refuse to send the bytes; the echo upstream shows
exactly which headers arrived.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, spawn_echo, spawn_gateway

BODY_TIMEOUT_S = 1.0
HEAD_TIMEOUT_S = 1.0
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 60


@dataclass
class Stack:
    gateway: str
    port: int

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://")


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn) -> Stack:
    upstream = spawn_echo(module_spawn)
    gateway, gw_port = spawn_gateway(
        module_spawn,
        {
            "GATEWAY_MEMORY_URL": upstream,
            "GATEWAY_INFERENCE_URL": upstream,
            "GATEWAY_KNOWLEDGE_URL": upstream,
            "GATEWAY_AUTH_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_CLIENT_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
            "GATEWAY_CLIENT_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
            "GATEWAY_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
            "GATEWAY_MAX_HEADER_COUNT": str(MAX_HEADERS),
            "GATEWAY_PUBLIC_PATHS": "/memory/*,/inference/*,/knowledge/*",
        },
    )
    return Stack(gateway, gw_port)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway, timeout=10) as c:
        yield c


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float
    closed: bool  # the server closed the connection after answering

    def problem(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/problem+json", self
        body: dict[str, object] = json.loads(self.body)
        assert body["status"] == self.status
        return body


def raw(stack: Stack, *parts: bytes, pause_s: float = 0.0, wait_s: float = 5.0) -> RawResponse:
    """Send ``parts`` on one connection (``pause_s`` between them) and read one answer."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.port), timeout=wait_s) as sock:
        for i, part in enumerate(parts):
            if i and pause_s:
                time.sleep(pause_s)
            try:
                sock.sendall(part)
            except OSError:
                break  # the server already answered and closed
        data = b""
        closed = False
        while b"\r\n\r\n" not in data or not _complete(data):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
        if not closed:
            sock.settimeout(0.5)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
    elapsed = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body, elapsed, closed)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return True


def echo_requests(client: httpx.Client) -> int:
    return int(client.get("/memory/stream-stats").json()["echo_requests"])


def echoed_headers(resp: httpx.Response) -> dict[str, list[str]]:
    assert resp.status_code == 200, resp.text
    out: dict[str, list[str]] = {}
    for name, value in resp.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


# --- slow bodies (slowloris) -------------------------------------------------------------------


def test_body_that_stops_mid_way_gets_408_and_a_closed_connection(
    stack: Stack, client: httpx.Client
) -> None:
    before = echo_requests(client)
    resp = raw(
        stack,
        b"POST /memory/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
    )
    assert resp.status == 408
    assert resp.problem()["type"] == "urn:switchboard:problem:request-timeout"
    assert BODY_TIMEOUT_S * 0.9 <= resp.elapsed_s < BODY_TIMEOUT_S + 2
    assert resp.closed
    assert echo_requests(client) == before  # nothing half-sent was served


def test_chunked_body_that_stalls_gets_408(stack: Stack, client: httpx.Client) -> None:
    before = echo_requests(client)
    resp = raw(
        stack,
        b"POST /memory/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n",
    )
    assert resp.status == 408
    assert resp.closed
    assert echo_requests(client) == before


def test_slow_but_steady_body_is_served(stack: Stack) -> None:
    # 5 chunks 0.4 s apart: longer than the timeout in total, never silent for that long
    parts = [b"POST /memory/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n"]
    parts += [b"ab"] * 5
    resp = raw(stack, *parts, pause_s=BODY_TIMEOUT_S * 0.4)
    assert resp.status == 200
    assert json.loads(resp.body)["body"] == "ab" * 5


def test_trickled_request_head_gets_408_at_the_deadline(stack: Stack) -> None:
    # a header byte every 0.2 s: never silent for long, but the head must be complete in time
    parts = [b"GET /memory/echo HTTP/1.1\r\nHost: gw\r\n"] + [b"X"] * 15
    resp = raw(stack, *parts, pause_s=0.2)
    assert resp.status == 408
    assert resp.problem()["type"] == "urn:switchboard:problem:request-timeout"
    assert HEAD_TIMEOUT_S * 0.9 <= resp.elapsed_s < HEAD_TIMEOUT_S + 1.5
    assert resp.closed


def test_silent_connection_is_closed_without_an_answer(stack: Stack) -> None:
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed, nothing written (a preconnect is no request)
        assert time.monotonic() - started < HEAD_TIMEOUT_S + 1.5


def test_keep_alive_connection_outlives_the_head_deadline(stack: Stack) -> None:
    request = b"GET /memory/echo HTTP/1.1\r\nHost: gw\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(request)
            data = b""
            while not (b"\r\n\r\n" in data and _complete(data)):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ")
            time.sleep(HEAD_TIMEOUT_S * 1.5)  # idle between requests: keep-alive's business


def test_stalled_request_heads_do_not_stop_the_gateway(stack: Stack, client: httpx.Client) -> None:
    stalled = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", stack.port), timeout=5)
            sock.sendall(b"GET /memory/echo HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
            stalled.append(sock)
        started = time.monotonic()
        assert client.get("/memory/echo").status_code == 200
        assert time.monotonic() - started < 1.0
        time.sleep(HEAD_TIMEOUT_S + 0.5)
        for sock in stalled:  # each got its 408 and was closed
            sock.settimeout(2)
            assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in stalled:
            sock.close()


# --- huge headers -------------------------------------------------------------------------------


def test_one_huge_header_is_431(client: httpx.Client) -> None:
    resp = client.get("/memory/echo", headers={"X-Big": "a" * 100_000})
    assert resp.status_code == 431
    body = resp.json()
    assert body["type"] == "urn:switchboard:problem:headers-too-large"
    assert str(MAX_HEADER_BYTES) in body["detail"]


def test_too_many_headers_is_431(client: httpx.Client) -> None:
    headers = [(f"X-H{i}", "1") for i in range(500)]
    resp = client.get("/memory/echo", headers=headers)
    assert resp.status_code == 431
    assert f"header fields; at most {MAX_HEADERS}" in resp.json()["detail"]


def test_headers_under_the_limits_pass(client: httpx.Client) -> None:
    headers = [(f"X-H{i}", "v" * 200) for i in range(MAX_HEADERS - 10)]
    assert client.get("/memory/echo", headers=headers).status_code == 200


def test_huge_headers_on_the_gateways_own_routes_and_websockets(
    stack: Stack, client: httpx.Client
) -> None:
    assert client.get("/health", headers={"X-Big": "a" * 100_000}).status_code == 431
    # lines under 8 KiB each: uvicorn's WebSocket handshake parser drops a longer line
    # without an answer (a limitation documented in docs/realtime.md)
    big = {f"X-Big-{i}": "a" * 4096 for i in range(MAX_HEADER_BYTES // 4096 + 1)}
    with pytest.raises(websockets.InvalidStatus) as info:
        ws_connect(stack.ws + "/memory/ws", additional_headers=big, open_timeout=5)
    assert info.value.response.status_code == 431
    assert json.loads(info.value.response.body)["status"] == 431


# --- header injection and request smuggling ---------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"X-A: one\rX-Switchboard-Identity: forged\r\n",  # bare CR inside a value
        b"X-A: one\x00two\r\n",  # NUL in a value
        b"X-A one\r\n",  # no colon
        b"Content-Length: 5\r\nContent-Length: 6\r\n",  # conflicting lengths
        b"Content-Length: 5\r\nContent-Length: 5\r\n",  # duplicated length
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # CL + TE smuggling
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: -5\r\n",
        b"Content-Length: 5x\r\n",
        b"Transfer-Encoding: gzip\r\n",  # a request body must end chunked
    ],
)
def test_malformed_framing_and_header_values_are_400(
    stack: Stack, client: httpx.Client, head: bytes
) -> None:
    before = echo_requests(client)
    resp = raw(stack, b"POST /memory/echo HTTP/1.1\r\nHost: gw\r\n" + head + b"\r\nhello")
    assert resp.status == 400
    assert resp.problem()["type"] == "urn:switchboard:problem:bad-request"
    assert resp.closed
    assert echo_requests(client) == before


def test_smuggled_second_request_never_reaches_the_service(
    stack: Stack, client: httpx.Client
) -> None:
    before = echo_requests(client)
    smuggled = b"GET /memory/echo?smuggled=1 HTTP/1.1\r\nHost: gw\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    resp = raw(
        stack,
        b"POST /memory/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%s" % (len(body), body),
    )
    assert resp.status == 400
    assert echo_requests(client) == before


@pytest.mark.parametrize(
    "name",
    ["X-Switchboard-Identity", "x-switchboard-signature", "X-SWITCHBOARD-IDENTITY"],
)
def test_client_identity_headers_never_reach_a_service(client: httpx.Client, name: str) -> None:
    resp = client.get("/memory/echo", headers=[(name, "forged"), (name, "forged-again")])
    seen = echoed_headers(resp)
    assert "x-switchboard-identity" not in seen
    assert "x-switchboard-signature" not in seen


def test_client_identity_headers_are_stripped_from_websocket_handshakes(stack: Stack) -> None:
    with ws_connect(
        stack.ws + "/memory/ws",
        additional_headers={"X-Switchboard-Identity": "forged", "X-Switchboard-Signature": "x"},
        open_timeout=5,
    ) as ws:
        ws.send("headers")
        seen = json.loads(ws.recv(timeout=5))
    assert "x-switchboard-identity" not in seen
    assert "x-switchboard-signature" not in seen


def test_client_forwarding_headers_are_replaced(client: httpx.Client) -> None:
    resp = client.get(
        "/memory/echo",
        headers=[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "7.7.7.7, 8.8.8.8"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "admin.internal"),
            ("X-Real-IP", "6.6.6.6"),
            ("Forwarded", "for=6.6.6.6;proto=https"),
        ],
    )
    seen = echoed_headers(resp)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert "admin.internal" not in seen.get("x-forwarded-host", [])
    assert "x-real-ip" not in seen
    assert "forwarded" not in seen


def test_host_header_tricks(stack: Stack, client: httpx.Client) -> None:
    # the service always sees its own host; the client's Host is only X-Forwarded-Host
    seen = echoed_headers(client.get("/memory/echo", headers={"Host": "evil.example"}))
    assert len(seen["host"]) == 1 and "evil.example" not in seen["host"][0]
    assert seen["x-forwarded-host"] == ["evil.example"]
    # RFC 9112 §3.2: more than one Host is a 400
    before = echo_requests(client)
    resp = raw(stack, b"GET /memory/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert resp.status == 400
    assert resp.problem()["type"] == "urn:switchboard:problem:bad-request"
    assert echo_requests(client) == before


def test_connection_header_cannot_strip_gateway_headers(client: httpx.Client) -> None:
    # hop-by-hop nomination must not let a client remove what the gateway sets
    resp = client.get(
        "/memory/echo", headers={"Connection": "keep-alive, X-Forwarded-For, X-Request-ID"}
    )
    seen = echoed_headers(resp)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert len(seen["x-request-id"]) == 1


def test_gateway_still_serves_after_all_of_the_above(client: httpx.Client) -> None:
    assert client.get("/memory/echo").status_code == 200
    assert client.get("/health").status_code in (200, 503)
