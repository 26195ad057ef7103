"""API keys through a real auth process: shown once, listed without the secret, verified by
the gateway's internal route only, deleted or expired → verification fails and the
revocation is published."""

from __future__ import annotations

import time
from typing import Any

from auth_harness import GatewayClient, RevocationListener, is_problem


def _session(gateway: GatewayClient) -> dict[str, str]:
    return gateway.user_headers(gateway.login(gateway.register()["username"]).access_token)


def _create(gateway: GatewayClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = gateway.http.post("/auth/api-keys", json={"name": "ci", **body}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    created: dict[str, Any] = resp.json()
    return created


def test_create_list_verify_delete(gateway: GatewayClient, revocations: RevocationListener) -> None:
    headers = _session(gateway)
    me = gateway.http.get("/auth/me", headers=headers).json()
    created = _create(gateway, headers, name="laptop")
    secret = created["key"]
    assert secret.startswith("sk-")
    assert secret.startswith(created["prefix"])
    assert created["scope"] == "inference knowledge memory"
    assert created["last_used_at"] is None

    listed = gateway.http.get("/auth/api-keys", headers=headers)
    assert listed.status_code == 200
    keys = listed.json()["api_keys"]
    assert [k["id"] for k in keys] == [created["id"]]
    assert "key" not in keys[0]
    assert secret not in listed.text  # shown once, never again

    verified = gateway.verify_api_key(secret)
    assert verified.status_code == 200, verified.text
    assert verified.json() == {
        "sub": me["id"],
        "username": me["username"],
        "scope": "inference knowledge memory",
        "tier": "free",
        "role": "user",
        "api_key_id": created["id"],
        "expires_at": None,
        "rate_limit": None,
        "max_priority": None,
        "priority": None,
    }
    after = gateway.http.get("/auth/api-keys", headers=headers).json()["api_keys"][0]
    assert after["last_used_at"] is not None

    # an API-key principal can use /auth/me
    me_by_key = gateway.http.get("/auth/me", headers=gateway.api_key_headers(verified.json()))
    assert me_by_key.json()["auth"] == "api_key"

    resp = gateway.http.delete(f"/auth/api-keys/{created['id']}", headers=headers)
    assert resp.status_code == 204
    revocations.wait_for({"api_key_id": created["id"]})
    body = is_problem(gateway.verify_api_key(secret), 401)
    assert body["detail"] == "The API key is not valid."
    assert gateway.http.get("/auth/api-keys", headers=headers).json()["api_keys"] == []
    is_problem(gateway.http.delete(f"/auth/api-keys/{created['id']}", headers=headers), 404)


def test_scope_is_a_subset_of_the_owners(gateway: GatewayClient) -> None:
    headers = _session(gateway)
    narrow = _create(gateway, headers, scope="memory")
    assert narrow["scope"] == "memory"
    assert gateway.verify_api_key(narrow["key"]).json()["scope"] == "memory"
    resp = gateway.http.post(
        "/auth/api-keys", json={"name": "x", "scope": "memory admin"}, headers=headers
    )
    body = is_problem(resp, 422)
    assert body["scopes"] == ["admin"]


def test_expired_key_fails_and_expiry_is_published(
    gateway: GatewayClient, revocations: RevocationListener
) -> None:
    headers = _session(gateway)
    created = _create(gateway, headers, expires_in_s=1)
    assert created["expires_at"] is not None
    assert gateway.verify_api_key(created["key"]).json()["expires_at"] is not None
    time.sleep(1.1)
    # the sweeper (every 0.3 s in tests) publishes the expiry without anyone asking
    revocations.wait_for({"api_key_id": created["id"]}, within_s=2.0)
    is_problem(gateway.verify_api_key(created["key"]), 401)


def test_verify_is_for_the_gateway_only(gateway: GatewayClient) -> None:
    headers = _session(gateway)
    secret = _create(gateway, headers)["key"]
    as_user = gateway.http.post(
        "/auth/internal/api-keys/verify", json={"key": secret}, headers=headers
    )
    is_problem(as_user, 403)
    is_problem(gateway.http.post("/auth/internal/api-keys/verify", json={"key": secret}), 401)


def test_unknown_and_malformed_keys_are_401_or_422(gateway: GatewayClient) -> None:
    is_problem(gateway.verify_api_key("sk-does-not-exist"), 401)
    is_problem(gateway.verify_api_key("x" * 5000), 422)


def test_api_key_cannot_manage_keys(gateway: GatewayClient) -> None:
    headers = _session(gateway)
    identity = gateway.verify_api_key(_create(gateway, headers)["key"]).json()
    resp = gateway.http.post(
        "/auth/api-keys", json={"name": "nested"}, headers=gateway.api_key_headers(identity)
    )
    is_problem(resp, 403)


def test_other_users_keys_are_invisible(gateway: GatewayClient) -> None:
    mine, theirs = _session(gateway), _session(gateway)
    their_key = _create(gateway, theirs)
    assert gateway.http.get("/auth/api-keys", headers=mine).json()["api_keys"] == []
    is_problem(gateway.http.delete(f"/auth/api-keys/{their_key['id']}", headers=mine), 404)
    assert gateway.verify_api_key(their_key["key"]).status_code == 200
