"""The pass-through proxy, through real processes: gateway → echo upstream (a real service
app on uvicorn). ``memory`` routes to the echo upstream; ``knowledge`` to a closed port;
``auth`` to a socket that accepts connections but never answers (a black hole)."""

from __future__ import annotations

import itertools
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

LIMIT = 64 * 1024


@dataclass
class Stack:
    gateway: str
    upstream: str

    @property
    def ws(self) -> str:
        return self.gateway.replace("http://", "ws://")


@pytest.fixture(scope="module")
def black_hole() -> Iterator[int]:
    """A listening socket that never accepts: connects succeed, nothing ever answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(scope="module")
def stack(module_spawn: Spawn, black_hole: int) -> Stack:
    upstream = spawn_echo(module_spawn)
    gateway, _ = spawn_gateway(
        module_spawn,
        {
            "GATEWAY_MEMORY_URL": upstream,
            "GATEWAY_INFERENCE_URL": upstream,
            "GATEWAY_KNOWLEDGE_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens
            "GATEWAY_AUTH_URL": f"http://127.0.0.1:{black_hole}",
            "GATEWAY_READ_TIMEOUT_S": "1.5",
            "GATEWAY_MAX_BODY_BYTES": str(LIMIT),
            "GATEWAY_TRACE_PROXY": "true",  # a span per request even without an exporter
            # pass-through is tested here; authentication in test_auth_enforcement.py
            "GATEWAY_PUBLIC_PATHS": "/memory/*,/inference/*,/code/*,/v1/*,/api/*,/knowledge/*",
            # limits are tested in test_rate_limits.py (the anonymous limit is off by default)
        },
    )
    return Stack(gateway=gateway, upstream=upstream)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway, timeout=10) as c:
        yield c


def _is_problem(resp: httpx.Response, status: int) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:switchboard:problem:")
    assert body["request_id"] == resp.headers["x-request-id"]
    return dict(body)


def _header(echoed: dict[str, object], name: str) -> list[str]:
    headers = echoed["headers"]
    assert isinstance(headers, list)
    return [v for k, v in headers if k == name]


# --- routing and forwarding -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_forwards_method_path_query_and_body(client: httpx.Client, method: str) -> None:
    body = b'{"hello": "world"}' if method not in ("GET", "DELETE") else b""
    resp = client.request(method, "/memory/echo?a=1&b=%20x", content=body)
    assert resp.status_code == 200
    echoed = resp.json()
    assert echoed["method"] == method
    assert echoed["path"] == "/memory/echo"
    assert echoed["query"] == "a=1&b=%20x"
    assert echoed["body"] == body.decode()


def test_encoded_path_is_forwarded_unchanged(client: httpx.Client) -> None:
    resp = client.get("/memory/echo", params={"q": "ä/&="})
    assert resp.json()["query"] == "q=%C3%A4%2F%26%3D"


def test_every_prefix_routes_to_its_service(client: httpx.Client) -> None:
    # /inference, /code, /v1 and /api all belong to inference (→ echo in this stack)
    for prefix in ("/inference", "/code", "/v1", "/api"):
        assert client.get(prefix + "/echo").json()["path"] == prefix + "/echo"


def test_prefix_matches_whole_segments_only(client: httpx.Client) -> None:
    problem = _is_problem(client.get("/memoryx/echo"), 404)
    assert "/memory" in problem["known_prefixes"]  # type: ignore[operator]


def test_unknown_prefix_is_404_problem(client: httpx.Client) -> None:
    problem = _is_problem(client.get("/nope/anything"), 404)
    assert "No service serves /nope/anything" in str(problem["detail"])


def test_large_response_body_streams_through(client: httpx.Client) -> None:
    resp = client.get("/memory/big", params={"size": 3_000_000})
    assert resp.status_code == 200
    assert len(resp.content) == 3_000_000
    assert resp.headers["content-length"] == "3000000"


def test_large_request_body_within_limit(client: httpx.Client) -> None:
    body = b"y" * (LIMIT - 10)
    assert client.post("/memory/echo", content=body).json()["body_len"] == len(body)


def test_chunked_request_body_is_streamed(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(4):
            yield b"z" * 1000

    assert client.post("/memory/echo", content=gen()).json()["body_len"] == 4000


# --- headers -----------------------------------------------------------------------------


def test_hop_by_hop_and_connection_named_headers_are_dropped(client: httpx.Client) -> None:
    resp = client.get(
        "/memory/echo",
        headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "5"},
    )
    echoed = resp.json()
    assert _header(echoed, "x-hop") == []
    assert _header(echoed, "keep-alive") == []


def test_client_cannot_send_identity_headers(client: httpx.Client) -> None:
    echoed = client.get(
        "/memory/echo",
        headers={"X-Switchboard-Identity": "forged", "X-Switchboard-Signature": "00"},
    ).json()
    assert _header(echoed, "x-switchboard-identity") == []
    assert _header(echoed, "x-switchboard-signature") == []


def test_forwarded_headers_are_set_by_gateway_not_client(client: httpx.Client) -> None:
    echoed = client.get("/memory/echo", headers={"X-Forwarded-For": "6.6.6.6"}).json()
    assert _header(echoed, "x-forwarded-for") == ["127.0.0.1"]
    assert _header(echoed, "x-forwarded-proto") == ["http"]


def test_request_id_is_accepted_forwarded_and_echoed(client: httpx.Client) -> None:
    resp = client.get("/memory/echo", headers={"X-Request-ID": "req-123.abc"})
    assert resp.headers["x-request-id"] == "req-123.abc"
    assert _header(resp.json(), "x-request-id") == ["req-123.abc"]
    assert resp.headers.get_list("x-request-id") == ["req-123.abc"]


def test_insane_request_id_is_replaced(client: httpx.Client) -> None:
    resp = client.get("/memory/echo", headers={"X-Request-ID": "x" * 300})
    rid = resp.headers["x-request-id"]
    assert rid != "x" * 300 and len(rid) == 32
    assert _header(resp.json(), "x-request-id") == [rid]


def test_generated_request_id_reaches_upstream(client: httpx.Client) -> None:
    resp = client.get("/memory/echo")
    assert _header(resp.json(), "x-request-id") == [resp.headers["x-request-id"]]


def test_traceparent_propagates_in_the_same_trace(client: httpx.Client) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = f"00-{trace_id}-00f067aa0ba902b7-01"
    received = _header(
        client.get("/memory/echo", headers={"traceparent": sent}).json(), "traceparent"
    )
    assert len(received) == 1
    _version, got_trace, parent, flags = received[0].split("-")
    assert got_trace == trace_id  # same trace
    assert parent != "00f067aa0ba902b7"  # the gateway's own span is the new parent
    assert flags == "01"


def test_tracestate_travels_only_with_its_trace(client: httpx.Client) -> None:
    """W3C: a tracestate whose traceparent was invalid belongs to no trace and is dropped;
    with a valid one it is passed on."""
    state = "vendor=abc"
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    echoed = client.get("/memory/echo", headers={"traceparent": valid, "tracestate": state})
    assert _header(echoed.json(), "tracestate") == [state]
    broken = client.get("/memory/echo", headers={"traceparent": "00-zz-1", "tracestate": state})
    assert _header(broken.json(), "tracestate") == []
    assert len(_header(broken.json(), "traceparent")) == 1  # a new trace instead


def test_upstream_date_and_server_headers_are_not_duplicated(client: httpx.Client) -> None:
    resp = client.get("/memory/echo")
    assert len(resp.headers.get_list("date")) == 1


# --- errors ------------------------------------------------------------------------------


def test_upstream_refused_is_503_problem(client: httpx.Client) -> None:
    start = time.monotonic()
    resp = client.get("/knowledge/anything")
    problem = _is_problem(resp, 503)
    assert "knowledge" in str(problem["detail"])
    assert resp.headers["retry-after"] == "1"
    assert time.monotonic() - start < 2.5


def test_upstream_silent_is_504_problem(client: httpx.Client) -> None:
    start = time.monotonic()
    problem = _is_problem(client.get("/auth/token"), 504)
    assert "auth" in str(problem["detail"])
    assert time.monotonic() - start < 5


def test_slow_upstream_is_504_problem(client: httpx.Client) -> None:
    _is_problem(client.get("/memory/slow", params={"seconds": 3}), 504)


def test_oversized_declared_body_is_413_before_upstream(client: httpx.Client) -> None:
    before = client.get("/memory/stream-stats").json()
    problem = _is_problem(client.post("/memory/echo", content=b"x" * (LIMIT + 1)), 413)
    assert problem["limit_bytes"] == LIMIT
    assert client.get("/memory/stream-stats").json() == before


def test_oversized_chunked_body_is_413(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * (LIMIT // 4)

    _is_problem(client.post("/memory/echo", content=gen()), 413)


def test_malformed_json_is_422_problem_naming_the_field(client: httpx.Client) -> None:
    problem = _is_problem(client.post("/memory/items", json={"name": "a", "count": "many"}), 422)
    assert "count" in str(problem["detail"])
    problem = _is_problem(
        client.post("/memory/items", content=b"{bad", headers={"content-type": "application/json"}),
        422,
    )
    assert problem["errors"]


def test_upstream_crash_is_500_problem_without_internals(client: httpx.Client) -> None:
    resp = client.get("/memory/boom")
    _is_problem(resp, 500)
    assert "secret internal detail" not in resp.text
    assert "Traceback" not in resp.text


# --- streaming ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ndjson", "sse"])
def test_stream_chunks_arrive_separately_and_spaced(client: httpx.Client, kind: str) -> None:
    arrivals: list[tuple[float, bytes]] = []
    with client.stream(
        "GET", "/memory/stream", params={"n": 5, "interval": 0.2, "kind": kind}
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-accel-buffering"] == "no"
        for piece in resp.iter_raw():
            arrivals.append((time.monotonic(), piece))
    assert len(arrivals) == 5, [p for _, p in arrivals]
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread >= 0.8
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.1  # no two chunks were batched together


def test_client_disconnect_cancels_upstream_stream(client: httpx.Client) -> None:
    before = client.get("/memory/stream-stats").json()["streams_cancelled"]
    with client.stream("GET", "/memory/stream", params={"n": 100, "interval": 0.1}) as resp:
        it = resp.iter_raw()
        next(it)
        next(it)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if client.get("/memory/stream-stats").json()["streams_cancelled"] > before:
            return
        time.sleep(0.05)
    pytest.fail("upstream stream was not cancelled after the client went away")


# --- websockets --------------------------------------------------------------------------


def test_websocket_echo_both_ways(stack: Stack) -> None:
    with ws_connect(stack.ws + "/memory/ws", open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo:hello"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=5) == b"\x00\x01binary"


def test_websocket_subprotocol_and_request_id(stack: Stack) -> None:
    with ws_connect(
        stack.ws + "/memory/ws",
        subprotocols=[websockets.Subprotocol("switchboard.v1")],
        additional_headers={"X-Request-ID": "ws-req-1"},
        open_timeout=5,
    ) as ws:
        assert ws.subprotocol == "switchboard.v1"
        ws.send("headers")
        seen = json.loads(ws.recv(timeout=5))
        assert seen["x-request-id"] == "ws-req-1"


def test_websocket_close_code_is_relayed(stack: Stack) -> None:
    with ws_connect(stack.ws + "/memory/ws", open_timeout=5) as ws:
        ws.send("close:4001")
        with pytest.raises(websockets.ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4001


def test_websocket_to_down_service_fails_fast(stack: Stack) -> None:
    start = time.monotonic()
    with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)) as info:
        with ws_connect(stack.ws + "/knowledge/ws", open_timeout=5) as ws:
            ws.recv(timeout=5)
    if isinstance(info.value, websockets.InvalidStatus):
        assert info.value.response.status_code == 503
    assert time.monotonic() - start < 4


# --- health ------------------------------------------------------------------------------


def test_health_reports_each_upstream(client: httpx.Client) -> None:
    body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["upstreams"]["memory"]["status"] == "ok"
    assert body["upstreams"]["knowledge"]["status"] == "down"
    assert body["upstreams"]["auth"]["status"] == "down"
    assert client.get("/health", params={"strict": "true"}).status_code == 503


def test_relayed_service_endpoints(client: httpx.Client) -> None:
    assert client.get("/health/memory").json()["service"] == "echo"
    assert client.get("/ready/memory").json()["status"] == "ready"
    assert "switchboard_http_requests_total" in client.get("/metrics/memory").text
    _is_problem(client.get("/health/knowledge"), 503)
    _is_problem(client.get("/health/nosuch"), 404)


def test_gateway_metrics_count_proxied_requests(client: httpx.Client) -> None:
    client.get("/memory/echo")
    text = client.get("/metrics").text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("switchboard_gateway_proxy_requests_total")
        and 'service="memory"' in ln
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


# --- review fixes: truncated bodies, early disconnects, path tricks, early answers --------


def raw_request(port: int, data: bytes, *, linger_s: float = 0.3) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        time.sleep(linger_s)
        sock.settimeout(0.2)
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_truncated_body_never_reaches_the_upstream(client: httpx.Client, stack: Stack) -> None:
    before = client.get("/memory/stream-stats").json()["echo_requests"]
    raw_request(
        port_of(stack.gateway),
        b"POST /memory/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 400,
        linger_s=0.1,
    )
    time.sleep(0.3)
    assert client.get("/memory/stream-stats").json()["echo_requests"] == before


def test_client_leaving_before_the_answer_cancels_the_upstream(
    client: httpx.Client, stack: Stack
) -> None:
    before = client.get("/memory/stream-stats").json()["slow_cancelled"]
    raw_request(
        port_of(stack.gateway),
        b"GET /memory/slow?seconds=1.2 HTTP/1.1\r\nHost: x\r\n\r\n",
        linger_s=0.3,
    )
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if client.get("/memory/stream-stats").json()["slow_cancelled"] > before:
            return
        time.sleep(0.05)
    pytest.fail("the upstream kept working for a client that had gone")


def test_upstream_answering_before_the_whole_upload_is_relayed(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1500

    resp = client.post("/memory/refuse-upload", content=gen())
    assert resp.status_code == 413


@pytest.mark.parametrize(
    "path", ["/auth//internal/api-keys/verify", "/auth/./internal/x", "/memory/../auth/internal"]
)
def test_path_tricks_cannot_reach_blocked_routes(client: httpx.Client, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404, resp.text


def test_forward_auth_is_off_by_default(client: httpx.Client) -> None:
    _is_problem(client.get("/gateway/verify", headers={"X-Forwarded-Uri": "/memory/x"}), 404)
