"""Per-user rate-limit overrides and request priorities through the real cluster.

An admin's override reaches the gateway inside the user's next token; an API key's
priority reaches the inference queue (observed on the inference service's own
``switchboard_inference_queue_admitted_total{priority=…}`` counter); a free user's
X-Priority 9 is capped; a malformed X-Priority is a 400 problem. A second gateway with
tight limits shows that admins and /health are not limited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from switchboard_devtools.cluster import GATEWAY, ClusterPlan
from switchboard_devtools.ports import free_port
from tests.fixtures.processes import Spawn, module_argv
from tests.support.auth_client import Login, new_user

CHAT = {
    "model": "llama3.2:latest",
    "messages": [{"role": "user", "content": "hello"}],
    "stream": False,
}
_ADMITTED = re.compile(r"^switchboard_inference_queue_admitted_total\{([^}]*)\} ([0-9.e+]+)$")


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


def admitted(http: httpx.Client, cluster: ClusterPlan, priority: int) -> float:
    """Generations the inference service admitted at ``priority`` (all backends)."""
    text = http.get(cluster.url("inference") + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        match = _ADMITTED.match(line)
        if match and f'priority="{priority}"' in match.group(1):
            total += float(match.group(2))
    return total


def user_id(http: httpx.Client, gw: str, login: Login) -> str:
    me: dict[str, Any] = http.get(gw + "/auth/me", headers=login.headers).json()
    return str(me["id"])


def set_overrides(
    http: httpx.Client, gw: str, admin: Login, target: Login, **body: object
) -> dict[str, Any]:
    resp = http.patch(
        f"{gw}/auth/admin/users/{user_id(http, gw, target)}", json=body, headers=admin.headers
    )
    assert resp.status_code == 200, resp.text
    updated: dict[str, Any] = resp.json()
    return updated


def relogin(gw: str, login: Login) -> Login:
    resp = httpx.post(
        gw + "/auth/token", data={"username": login.username, "password": login.password}
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return Login(login.username, login.password, body["access_token"], body["refresh_token"])


def test_admin_override_limits_one_user_and_not_another_of_the_same_tier(
    cluster: ClusterPlan, cluster_admin: Login, http: httpx.Client
) -> None:
    gw = cluster.url("gateway")
    a, b = new_user(gw), new_user(gw)
    assert set_overrides(http, gw, cluster_admin, a, rate_limit="3/minute")["tier"] == "free"
    a = relogin(gw, a)  # the override rides in the next token

    statuses = []
    for _ in range(5):
        resp = http.get(gw + "/inference/whoami", headers=a.headers)
        statuses.append(resp.status_code)
        if resp.status_code == 200:
            assert resp.json()["rate_limit"] == "3/minute"  # the signed identity carries it
            assert resp.headers["ratelimit-limit"] == "3"
        else:
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["limit"] == 3
            assert int(resp.headers["retry-after"]) >= 1
    assert statuses == [200, 200, 200, 429, 429]

    for _ in range(5):  # same tier, no override: the tier's (large) limit
        resp = http.get(gw + "/inference/whoami", headers=b.headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["rate_limit"] is None


def test_forward_auth_applies_the_same_limit_and_priority(
    cluster: ClusterPlan, cluster_admin: Login, http: httpx.Client
) -> None:
    """/gateway/verify (Traefik's forwardAuth) answers 429 past the caller's limit and
    hands the proxy the capped X-Priority, like a request through the gateway."""
    gw = cluster.url("gateway")
    user = new_user(gw)
    set_overrides(http, gw, cluster_admin, user, rate_limit="2/minute", max_priority=3)
    user = relogin(gw, user)
    asked = {"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/inference/chat",
             "X-Priority": "9", **user.headers}  # fmt: skip
    first = http.get(gw + "/gateway/verify", headers=asked)
    assert first.status_code == 200, first.text
    assert first.headers["x-priority"] == "3"  # capped by the user's max_priority
    assert first.headers["ratelimit-limit"] == "2"
    assert http.get(gw + "/gateway/verify", headers=asked).status_code == 200
    third = http.get(gw + "/gateway/verify", headers=asked)
    assert third.status_code == 429
    assert third.headers["content-type"] == "application/problem+json"
    assert int(third.headers["retry-after"]) >= 1
    bad = http.get(gw + "/gateway/verify", headers={**asked, "X-Priority": "banana"})
    assert bad.status_code == 400


def test_api_key_priority_reaches_the_inference_queue(
    cluster: ClusterPlan, http: httpx.Client
) -> None:
    gw = cluster.url("gateway")
    owner = new_user(gw)
    created = http.post(
        gw + "/auth/api-keys",
        json={"name": "batch", "scope": "inference", "priority": 2},
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    assert http.get(gw + "/inference/whoami", headers=key).json()["priority"] == 2

    before = admitted(http, cluster, 2)
    resp = http.post(gw + "/inference/chat", json=CHAT, headers=key)
    assert resp.status_code == 200, resp.text
    assert admitted(http, cluster, 2) == before + 1

    # an explicit X-Priority replaces the key's priority (within the cap)
    before = admitted(http, cluster, 1)
    resp = http.post(gw + "/inference/chat", json=CHAT, headers={**key, "X-Priority": "1"})
    assert resp.status_code == 200, resp.text
    assert admitted(http, cluster, 1) == before + 1


def test_x_priority_9_from_a_free_user_is_capped(
    cluster: ClusterPlan, cluster_admin: Login, http: httpx.Client
) -> None:
    gw = cluster.url("gateway")
    user = new_user(gw)
    cap = 6  # GATEWAY_PRIORITY_CAPS default entry (the cluster runs the defaults)
    before_cap, before_top = admitted(http, cluster, cap), admitted(http, cluster, 9)
    resp = http.post(gw + "/inference/chat", json=CHAT, headers={**user.headers, "X-Priority": "9"})
    assert resp.status_code == 200, resp.text
    assert admitted(http, cluster, cap) == before_cap + 1
    assert admitted(http, cluster, 9) == before_top

    # an admin-set max_priority replaces the tier's cap
    set_overrides(http, gw, cluster_admin, user, max_priority=3)
    user = relogin(gw, user)
    assert http.get(gw + "/inference/whoami", headers=user.headers).json()["max_priority"] == 3
    before = admitted(http, cluster, 3)
    resp = http.post(gw + "/inference/chat", json=CHAT, headers={**user.headers, "X-Priority": "9"})
    assert resp.status_code == 200, resp.text
    assert admitted(http, cluster, 3) == before + 1


@pytest.mark.parametrize(
    "value",
    [b"banana", b"10", b"-1", b"-0", b"1e309", b"9" * 400, "٣".encode(), b"5.0"],
)
def test_malformed_x_priority_is_a_400_problem(
    cluster: ClusterPlan, cluster_user: Login, http: httpx.Client, value: bytes
) -> None:
    gw = cluster.url("gateway")
    resp = http.post(
        gw + "/inference/chat", json=CHAT, headers={**cluster_user.headers, "X-Priority": value}
    )
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem = resp.json()
    assert "0 (lowest) to 9 (highest)" in problem["detail"]
    assert (problem["allowed_min"], problem["allowed_max"]) == (0, 9)
    assert problem["request_id"]
    # other services do not read X-Priority: it is dropped, not refused
    me = http.get(gw + "/auth/me", headers={**cluster_user.headers, "X-Priority": value})
    assert me.status_code == 200, me.text


@pytest.fixture
def tight_gateway(cluster: ClusterPlan, spawn: Spawn) -> str:
    """A second gateway in front of the same services, with tiny limits and its own
    counters (Redis database 9)."""
    port = free_port()
    env = cluster.env_for(GATEWAY)
    env.update(
        GATEWAY_PORT=str(port),
        GATEWAY_REDIS_URL=f"{cluster.redis_url}/9",
        GATEWAY_RATE_LIMITS="default=3/minute",
        GATEWAY_ANONYMOUS_RATE_LIMIT="2/minute",
    )
    url = f"http://127.0.0.1:{port}"
    spawn("tight-gateway", module_argv("gateway"), env=env, ready_url=url + "/ready")
    return url


def test_admins_and_health_bypass_limits(
    tight_gateway: str, cluster_admin: Login, cluster: ClusterPlan, http: httpx.Client
) -> None:
    gw = tight_gateway
    user = new_user(cluster.url("gateway"))
    statuses = [http.get(gw + "/auth/me", headers=user.headers).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # the limit is on

    # an admin is not limited, even with a tiny override of their own
    set_overrides(http, gw, cluster_admin, cluster_admin, rate_limit="1/minute")
    try:
        admin = relogin(gw, cluster_admin)
        for _ in range(6):
            resp = http.get(gw + "/auth/me", headers=admin.headers)
            assert resp.status_code == 200, resp.text
            assert "ratelimit-limit" not in resp.headers
    finally:
        set_overrides(http, gw, cluster_admin, cluster_admin, rate_limit=None)

    for path in ("/health", "/ready", "/health/auth"):  # the gateway's own routes
        assert all(http.get(gw + path).status_code == 200 for _ in range(6)), path
