"""The real cluster: every service answers /health, /ready and /metrics directly and
through the gateway, and each service's placeholder route is reachable by its prefix."""

from __future__ import annotations

import httpx
import pytest

from switchboard_devtools.cluster import SERVICES, ClusterPlan
from tests.support.auth_client import Login

SERVICE_NAMES = [s.name for s in SERVICES]
PREFIXES = {
    "auth": "/auth",
    "inference": "/inference",
    "knowledge": "/knowledge",
    "memory": "/memory",
}


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_service_answers_directly(cluster: ClusterPlan, service: str) -> None:
    base = cluster.url(service)
    health = httpx.get(base + "/health").json()
    assert health == {"status": "ok", "service": service, "version": "0.1.0"}
    ready = httpx.get(base + "/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    metrics = httpx.get(base + "/metrics")
    assert metrics.status_code == 200
    assert f'service="{service}"' in metrics.text


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_service_answers_through_gateway(
    cluster: ClusterPlan, cluster_user: Login, service: str
) -> None:
    gw = cluster.url("gateway")
    assert httpx.get(f"{gw}/health/{service}").json()["service"] == service
    assert httpx.get(f"{gw}/ready/{service}").json()["status"] == "ready"
    assert f'service="{service}"' in httpx.get(f"{gw}/metrics/{service}").text
    pong = httpx.get(f"{gw}{PREFIXES[service]}/ping", headers=cluster_user.headers)
    assert pong.status_code == 200
    assert pong.json()["service"] == service


def test_inference_owns_its_other_prefixes(cluster: ClusterPlan, cluster_user: Login) -> None:
    gw = cluster.url("gateway")
    for prefix in ("/code", "/v1", "/api"):
        resp = httpx.get(f"{gw}{prefix}/does-not-exist", headers=cluster_user.headers)
        assert resp.status_code == 404
        # answered by inference's own 404 handler, not the gateway's "no service" problem
        assert "No service serves" not in resp.json()["detail"]


def test_aggregated_health_is_ok(cluster: ClusterPlan) -> None:
    gw = cluster.url("gateway")
    body = httpx.get(gw + "/health", params={"strict": "true"}).json()
    assert body["status"] == "ok"
    assert set(body["upstreams"]) == set(SERVICE_NAMES)
    assert all(u["status"] == "ok" for u in body["upstreams"].values())


def test_gateway_own_endpoints(cluster: ClusterPlan) -> None:
    gw = cluster.url("gateway")
    assert httpx.get(gw + "/ready").json()["status"] == "ready"
    assert "switchboard_http_requests_total" in httpx.get(gw + "/metrics").text
    docs = httpx.get(gw + "/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text and "/docs/oauth2-redirect" in docs.text


def test_merged_openapi_describes_every_service(cluster: ClusterPlan) -> None:
    spec = httpx.get(cluster.url("gateway") + "/openapi.json").json()
    assert spec["info"]["title"] == "Switchboard API"
    paths = spec["paths"]
    for path in ("/auth/token", "/auth/me", "/inference/whoami", "/knowledge/whoami",
                 "/memory/whoami", "/health", "/gateway/verify"):  # fmt: skip
        assert path in paths, path
    password = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    assert password["tokenUrl"] == "/auth/token"
    assert {"inference", "knowledge", "memory", "admin"} <= set(password["scopes"])
    assert "Problem" in spec["components"]["schemas"]
    whoami = paths["/memory/whoami"]["get"]
    assert whoami["security"] == [{"OAuth2PasswordBearer": ["memory"]}]
    assert "application/problem+json" in whoami["responses"]["401"]["content"]


def test_swagger_authorize_flow(cluster: ClusterPlan, cluster_user: Login) -> None:
    """What Swagger UI's Authorize does: POST the password form to tokenUrl, then call."""
    gw = cluster.url("gateway")
    token = httpx.post(
        gw + "/auth/token",
        data={"grant_type": "password", "username": cluster_user.username,
              "password": cluster_user.password, "scope": "memory"},
    )  # fmt: skip
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    assert httpx.get(gw + "/memory/whoami", headers=bearer).status_code == 200


def test_request_id_round_trip_through_gateway(cluster: ClusterPlan, cluster_user: Login) -> None:
    gw = cluster.url("gateway")
    headers = {"X-Request-ID": "trace-me-42", **cluster_user.headers}
    resp = httpx.get(gw + "/memory/ping", headers=headers)
    assert resp.status_code == 200
    assert resp.headers.get_list("x-request-id") == ["trace-me-42"]
