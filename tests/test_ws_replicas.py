"""WebSockets through two gateway replicas with no sticky sessions.

The session cluster (auth, inference over the Ollama simulator, …, gateway A) plus a
second gateway process, B, on the same Redis and in front of the same services. Chats
stream through both at once; a session revoked by logout is refused at the handshake by
both; the per-caller WebSocket cap is per replica (B is started with a cap of 2).
"""

from __future__ import annotations

import json
import sys
import time

import httpx
import pytest
import websockets
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from switchboard_devtools.cluster import GATEWAY, ClusterPlan
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn
from tests.support.auth_client import Login, new_user

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}
CAP_B = 2


@pytest.fixture(scope="module")
def replicas(cluster: ClusterPlan, module_spawn: Spawn) -> tuple[str, str]:
    """The ws:// URLs of gateway A (the cluster's) and gateway B (started here)."""
    port = free_port()
    env = cluster.env_for(GATEWAY) | {
        "GATEWAY_PORT": str(port),
        "GATEWAY_WS_MAX_PER_PRINCIPAL": str(CAP_B),
    }
    b = f"http://127.0.0.1:{port}"
    module_spawn("gateway-b", [sys.executable, "-m", "gateway"], env=env, ready_url=b + "/ready")
    return cluster.url("gateway").replace("http://", "ws://"), b.replace("http://", "ws://")


def _open(url: str, login: Login, *, in_query: bool = False) -> ClientConnection:
    if in_query:  # the browser way: no headers on a WebSocket handshake
        return ws_connect(f"{url}/inference/ws?access_token={login.access_token}", open_timeout=10)
    return ws_connect(url + "/inference/ws", additional_headers=login.headers, open_timeout=10)


def _reply(ws: ClientConnection) -> tuple[list[str], str]:
    """Event types and the concatenated tokens of one chat answer."""
    kinds: list[str] = []
    text = ""
    while True:
        event = json.loads(ws.recv(timeout=15))
        kinds.append(event["type"])
        if event["type"] == "token":
            text += event["content"]
        if event["type"] in ("done", "error"):
            return kinds, text


def _refused_status(url: str, login: Login) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        _open(url, login)
    return info.value.response.status_code


def test_chats_stream_through_both_replicas_at_once(
    replicas: tuple[str, str], cluster_user: Login
) -> None:
    a, b = replicas
    with _open(a, cluster_user) as via_a, _open(b, cluster_user, in_query=True) as via_b:
        via_a.send(json.dumps(CHAT))
        via_b.send(json.dumps(CHAT))  # both generations are in flight together
        kinds_a, text_a = _reply(via_a)
        kinds_b, text_b = _reply(via_b)
    for kinds in (kinds_a, kinds_b):
        assert kinds.count("token") > 3
        assert kinds[-1] == "done"
    assert text_a == text_b != ""  # the simulator is deterministic: same answer either way


def test_logout_is_refused_at_the_handshake_on_both_replicas(
    replicas: tuple[str, str], cluster: ClusterPlan
) -> None:
    a, b = replicas
    user = new_user(cluster.url("gateway"))
    for url in (a, b):
        with _open(url, user) as ws:
            ws.send(json.dumps(CHAT))
            assert _reply(ws)[0][-1] == "done"
    resp = httpx.post(cluster.url("gateway") + "/auth/logout", headers=user.headers, timeout=10)
    assert resp.status_code in (200, 204), resp.text
    # revocations reach every replica over Redis pub/sub; allow a moment for delivery
    deadline = time.monotonic() + 5
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        statuses = {}
        for url in (a, b):
            try:
                with _open(url, user):
                    pass
            except websockets.InvalidStatus as exc:
                statuses[url] = exc.response.status_code
        if len(statuses) == 2:
            break
        time.sleep(0.1)
    assert statuses == {a: 401, b: 401}


def test_websocket_cap_is_per_caller_and_per_replica(
    replicas: tuple[str, str], cluster: ClusterPlan
) -> None:
    a, b = replicas
    user = new_user(cluster.url("gateway"))
    other = new_user(cluster.url("gateway"))
    with _open(b, user), _open(b, user) as second:
        assert _refused_status(b, user) == 429  # B allows CAP_B per caller
        with _open(b, other), _open(a, user):  # another caller on B; the same one on A
            pass
        second.close()
        with _reopen(b, user) as again:  # a slot freed by closing is usable again
            again.send(json.dumps(CHAT))
            assert _reply(again)[0][-1] == "done"


def _reopen(url: str, login: Login) -> ClientConnection:
    """Open, allowing the gateway a moment to count a socket just closed as gone (the close
    handshake completes before the gateway's session has finished closing its upstream)."""
    deadline = time.monotonic() + 3
    while True:
        try:
            return _open(url, login)
        except websockets.InvalidStatus as exc:
            if exc.response.status_code != 429 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
