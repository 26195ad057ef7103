"""Authentication end to end: real auth service, real Redis, real gateway, real services.

register → token → a protected route on every service → refresh → reuse of the spent
refresh token kills the session → logout → tokens refused within 1 s; API keys; key
rotation without downtime; spoofed identity; direct hits on service ports; bad tokens.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx
import pytest
import websockets
from joserfc import jwt
from joserfc.jwk import OKPKey
from websockets.sync.client import connect as ws_connect

from switchboard_common.identity import Principal, sign_identity, verify_identity
from switchboard_devtools.cluster import ClusterPlan
from tests.support.auth_client import Login, login, new_user

PROTECTED = {
    "auth": "/auth/me",
    "inference": "/inference/whoami",
    "knowledge": "/knowledge/whoami",
    "memory": "/memory/whoami",
}


def gw(cluster: ClusterPlan) -> str:
    return cluster.url("gateway")


def until(check: Callable[[], bool], within_s: float) -> float:
    """Seconds until ``check()`` holds; fails the test if it does not within ``within_s``."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    pytest.fail(f"condition not met within {within_s}s")


def status(cluster: ClusterPlan, path: str, headers: dict[str, str]) -> int:
    return httpx.get(gw(cluster) + path, headers=headers, timeout=5).status_code


def assert_problem(resp: httpx.Response, status_code: int) -> dict[str, object]:
    assert resp.status_code == status_code, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = resp.json()
    assert "Traceback" not in resp.text
    return body


# --- the full flow -----------------------------------------------------------------------


def test_token_reaches_a_protected_route_on_every_service(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    for service, path in PROTECTED.items():
        resp = httpx.get(gw(cluster) + path, headers=user.headers)
        assert resp.status_code == 200, f"{service}: {resp.text}"
        assert resp.json()["username"] == user.username


def test_refresh_then_reuse_revokes_session_within_a_second(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    assert status(cluster, "/memory/whoami", user.headers) == 200
    refreshed = httpx.post(
        gw(cluster) + "/auth/refresh", json={"refresh_token": user.refresh_token}
    )
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    new_headers = {"Authorization": f"Bearer {new['access_token']}"}
    assert status(cluster, "/memory/whoami", new_headers) == 200

    reuse = httpx.post(gw(cluster) + "/auth/refresh", json={"refresh_token": user.refresh_token})
    assert reuse.status_code in (400, 401)
    assert reuse.headers["content-type"] == "application/problem+json"
    # the whole session is gone: both access tokens of it stop working at the gateway
    until(lambda: status(cluster, "/memory/whoami", new_headers) == 401, within_s=1.0)
    assert status(cluster, "/memory/whoami", user.headers) == 401
    rejected = httpx.post(
        gw(cluster) + "/auth/refresh", json={"refresh_token": new["refresh_token"]}
    )
    assert rejected.status_code in (400, 401)


def test_logout_revokes_within_a_second(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    other = login(gw(cluster), user.username, user.password)  # a second session
    assert status(cluster, "/inference/whoami", user.headers) == 200
    assert httpx.post(gw(cluster) + "/auth/logout", headers=user.headers).status_code == 204
    until(lambda: status(cluster, "/inference/whoami", user.headers) == 401, within_s=1.0)
    assert status(cluster, "/inference/whoami", other.headers) == 200  # only that session


def test_revoked_token_problem_says_what_to_do(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    httpx.post(gw(cluster) + "/auth/logout", headers=user.headers)
    until(lambda: status(cluster, "/memory/whoami", user.headers) == 401, within_s=1.0)
    resp = httpx.get(gw(cluster) + "/memory/whoami", headers=user.headers)
    body = assert_problem(resp, 401)
    assert "revoked" in str(body["detail"])
    assert resp.headers["www-authenticate"].startswith("Bearer")


# --- API keys ----------------------------------------------------------------------------


def create_key(cluster: ClusterPlan, user: Login, **body: object) -> dict[str, str]:
    resp = httpx.post(
        gw(cluster) + "/auth/api-keys", headers=user.headers, json={"name": "ci", **body}
    )
    assert resp.status_code == 201, resp.text
    created: dict[str, str] = resp.json()
    return created


def test_api_key_flow(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    created = create_key(cluster, user)
    key = created["key"]
    assert key.startswith("sk-")
    listed = httpx.get(gw(cluster) + "/auth/api-keys", headers=user.headers).json()
    assert key not in json.dumps(listed)  # shown once, never listed
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        resp = httpx.get(gw(cluster) + "/memory/whoami", headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["kind"] == "api_key"
        assert resp.json()["username"] == user.username
    deleted = httpx.delete(gw(cluster) + f"/auth/api-keys/{created['id']}", headers=user.headers)
    assert deleted.status_code == 204
    until(lambda: status(cluster, "/memory/whoami", {"X-API-Key": key}) == 401, within_s=1.0)


def test_api_key_scope_is_enforced(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    key = create_key(cluster, user, scope="memory")["key"]
    headers = {"X-API-Key": key}
    assert status(cluster, "/memory/whoami", headers) == 200
    resp = httpx.get(gw(cluster) + "/inference/whoami", headers=headers)
    body = assert_problem(resp, 403)
    assert body["missing_scopes"] == ["inference"]


def test_unknown_api_key_is_401(cluster: ClusterPlan) -> None:
    resp = httpx.get(gw(cluster) + "/memory/whoami", headers={"X-API-Key": "sk-not-a-real-key"})
    assert_problem(resp, 401)


def test_token_with_fewer_scopes_is_limited(cluster: ClusterPlan) -> None:
    user = new_user(gw(cluster))
    narrow = login(gw(cluster), user.username, user.password, scope="memory")
    assert status(cluster, "/memory/whoami", narrow.headers) == 200
    assert status(cluster, "/knowledge/whoami", narrow.headers) == 403


# --- rotation ----------------------------------------------------------------------------


def kid_of(token: str) -> str:
    segment = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return str(header["kid"])


def test_key_rotation_without_downtime(cluster: ClusterPlan, cluster_admin: Login) -> None:
    before = new_user(gw(cluster))
    old_kid = kid_of(before.access_token)
    rotated = httpx.post(
        gw(cluster) + "/auth/admin/signing-keys/rotate", headers=cluster_admin.headers
    )
    assert rotated.status_code in (200, 201), rotated.text
    after = login(gw(cluster), before.username, before.password)
    assert kid_of(after.access_token) != old_kid
    assert status(cluster, "/memory/whoami", before.headers) == 200  # old key still verifies
    assert status(cluster, "/memory/whoami", after.headers) == 200  # new key known at once


def test_admin_routes_need_admin(cluster: ClusterPlan, cluster_user: Login) -> None:
    assert status(cluster, "/auth/admin/users", cluster_user.headers) == 403


# --- forged and bad credentials ----------------------------------------------------------


def test_no_credential_is_401_with_challenge(cluster: ClusterPlan) -> None:
    resp = httpx.get(gw(cluster) + "/knowledge/whoami")
    body = assert_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert "/auth/token" in str(body["detail"])


def test_spoofed_identity_headers_are_ignored(cluster: ClusterPlan) -> None:
    forged = Principal(sub="1", username="admin", scope=["memory", "admin"], role="admin")
    value, signature = sign_identity(forged, "guessed-secret")
    headers = {"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature}
    assert_problem(httpx.get(gw(cluster) + "/memory/whoami", headers=headers), 401)


def test_identity_headers_with_a_token_are_replaced(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    forged = Principal(sub="999", username="someone-else", scope=["memory"])
    value, signature = sign_identity(forged, "guessed-secret")
    headers = {
        **cluster_user.headers,
        "X-Switchboard-Identity": value,
        "X-Switchboard-Signature": signature,
    }
    resp = httpx.get(gw(cluster) + "/memory/whoami", headers=headers)
    assert resp.json()["username"] == cluster_user.username


@pytest.mark.parametrize("service", ["inference", "knowledge", "memory"])
def test_direct_hit_on_service_port_is_401(cluster: ClusterPlan, service: str) -> None:
    resp = httpx.get(cluster.url(service) + PROTECTED[service])
    assert_problem(resp, 401)
    forged = Principal(sub="1", username="x", scope=[service])
    value, signature = sign_identity(forged, "not-the-cluster-secret")
    resp = httpx.get(
        cluster.url(service) + PROTECTED[service],
        headers={"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature},
    )
    assert_problem(resp, 401)


def forge(claims: dict[str, object], header: dict[str, object]) -> str:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": str(header.get("kid", "x"))})
    return jwt.encode(header, claims, key, algorithms=["Ed25519"])


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_bad_tokens_are_401_never_500(cluster: ClusterPlan, cluster_user: Login) -> None:
    real = cluster_user.access_token
    head, payload, sig = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered = f"{head}.{b64({**claims, 'scope': 'memory admin'})}.{sig}"
    alg_none = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': kid_of(real)})}.{payload}."
    hs256 = f"{b64({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid_of(real)})}.{payload}.{sig}"
    unknown_kid = forge(claims, {"alg": "Ed25519", "typ": "at+jwt", "kid": "not-a-known-kid"})
    own_key_same_kid = forge(claims, {"alg": "Ed25519", "typ": "at+jwt", "kid": kid_of(real)})
    for name, token in {
        "garbage": "not.a.token",
        "tampered": tampered,
        "alg none": alg_none,
        "hs256": hs256,
        "unknown kid": unknown_kid,
        "forged signature": own_key_same_kid,
        "huge": "a" * 20_000,
    }.items():
        resp = httpx.get(
            gw(cluster) + "/memory/whoami", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status_code in (401, 431), f"{name}: {resp.status_code} {resp.text}"
        if resp.status_code == 401:
            assert resp.headers["content-type"] == "application/problem+json", name
            assert 'error="invalid_token"' in resp.headers["www-authenticate"], name


def test_internal_routes_are_not_reachable_from_outside(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    resp = httpx.post(
        gw(cluster) + "/auth/internal/api-keys/verify",
        headers=cluster_user.headers,
        json={"key": "sk-x"},
    )
    assert_problem(resp, 404)


def test_websocket_handshake_needs_a_credential(cluster: ClusterPlan) -> None:
    url = gw(cluster).replace("http://", "ws://") + "/memory/ws"
    with pytest.raises((websockets.InvalidStatus, websockets.ConnectionClosed)) as info:
        with ws_connect(url, open_timeout=5) as ws:
            ws.recv(timeout=5)
    response = getattr(info.value, "response", None)
    if response is not None:
        assert response.status_code == 401
    else:  # servers without the denial extension close with 1008
        assert getattr(getattr(info.value, "rcvd", None), "code", None) == 1008


# --- forwardAuth endpoint ---------------------------------------------------------------


def verify(cluster: ClusterPlan, uri: str, **headers: str) -> httpx.Response:
    return httpx.get(
        gw(cluster) + "/gateway/verify",
        headers={"X-Forwarded-Method": "GET", "X-Forwarded-Uri": uri, **headers},
    )


def test_forward_auth_allows_with_signed_identity(
    cluster: ClusterPlan, cluster_user: Login
) -> None:
    resp = verify(cluster, "/memory/whoami?x=1", **cluster_user.headers)
    assert resp.status_code == 200
    principal = verify_identity(
        resp.headers["x-switchboard-identity"],
        resp.headers["x-switchboard-signature"],
        cluster.internal_secret,
    )
    assert principal.username == cluster_user.username


def test_forward_auth_refuses_like_the_gateway(cluster: ClusterPlan, cluster_user: Login) -> None:
    resp = verify(cluster, "/memory/whoami")
    assert_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")
    narrow = login(gw(cluster), cluster_user.username, cluster_user.password, scope="memory")
    assert_problem(verify(cluster, "/knowledge/x", **narrow.headers), 403)
    assert_problem(verify(cluster, "/nope"), 404)
    assert_problem(verify(cluster, "/auth/internal/api-keys/verify", **cluster_user.headers), 404)


def test_forward_auth_public_route_passes_without_identity(cluster: ClusterPlan) -> None:
    forged = Principal(sub="1", username="x")
    value, signature = sign_identity(forged, "whatever")
    resp = verify(
        cluster,
        "/auth/token",
        **{"X-Switchboard-Identity": value, "X-Switchboard-Signature": signature},
    )
    assert resp.status_code == 200
    assert "x-switchboard-identity" not in resp.headers
