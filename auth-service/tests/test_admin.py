"""Admin through a real auth process: the first admin from env, listing users, disabling
(revocation published), role and tier changes, and signing-key rotation with overlap."""

from __future__ import annotations

import base64
import json

from auth_harness import (
    ADMIN_USERNAME,
    PASSWORD,
    GatewayClient,
    RevocationListener,
    is_problem,
)
from joserfc.jwk import OKPKey

from auth_service.core.tokens import verify_access_token


def test_first_admin_comes_from_env(gateway: GatewayClient) -> None:
    tokens = gateway.login(ADMIN_USERNAME, "admin-password-for-tests")
    claims = gateway.verify(tokens.access_token)
    assert claims.role == "admin"
    assert tokens.scope == "admin inference knowledge memory"


def test_list_and_show_users(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    listed = gateway.http.get("/auth/admin/users", params={"limit": 500}, headers=admin)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] >= 2
    names = {u["username"] for u in body["users"]}
    assert {ADMIN_USERNAME, user["username"]} <= names
    shown = gateway.http.get(f"/auth/admin/users/{user['id']}", headers=admin)
    assert shown.json() == user
    is_problem(gateway.http.get("/auth/admin/users/nope", headers=admin), 404)


def test_non_admin_gets_403_naming_the_scope(gateway: GatewayClient) -> None:
    user = gateway.register()
    headers = gateway.user_headers(gateway.login(user["username"]).access_token)
    body = is_problem(gateway.http.get("/auth/admin/users", headers=headers), 403)
    assert body["missing_scopes"] == ["admin"]
    assert "'admin'" in body["detail"]


def test_disable_revokes_sessions_and_publishes(
    gateway: GatewayClient, revocations: RevocationListener
) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    tokens = gateway.login(user["username"])
    sid = gateway.verify(tokens.access_token).sid
    resp = gateway.http.patch(
        f"/auth/admin/users/{user['id']}", json={"disabled": True}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["disabled"] is True
    revocations.wait_for({"sid": sid})
    revocations.wait_for({"sub": user["id"]})
    assert revocations.revoked_sid_ttl(sid) > 0
    assert is_problem(gateway.refresh(tokens.refresh_token), 400)["error"] == "invalid_grant"
    is_problem(gateway.token(user["username"], PASSWORD), 400)
    is_problem(gateway.http.get("/auth/me", headers=gateway.user_headers(tokens.access_token)), 401)

    # enable again: a fresh login works
    gateway.http.patch(f"/auth/admin/users/{user['id']}", json={"disabled": False}, headers=admin)
    assert gateway.login(user["username"]).access_token


def test_role_and_tier_apply_at_next_login(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    resp = gateway.http.patch(
        f"/auth/admin/users/{user['id']}", json={"role": "admin", "tier": "pro"}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    assert (resp.json()["role"], resp.json()["tier"]) == ("admin", "pro")
    tokens = gateway.login(user["username"])
    claims = gateway.verify(tokens.access_token)
    assert (claims.role, claims.tier) == ("admin", "pro")
    assert "admin" in claims.scopes

    demoted = gateway.http.patch(
        f"/auth/admin/users/{user['id']}", json={"role": "user"}, headers=admin
    )
    assert demoted.json()["role"] == "user"
    # demotion revoked the admin-scoped session
    assert is_problem(gateway.refresh(tokens.refresh_token), 400)["error"] == "invalid_grant"


def test_invalid_admin_changes_are_422(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    for body in ({"role": "superuser"}, {"tier": "Has Spaces"}, {"unknown": 1}):
        is_problem(
            gateway.http.patch(f"/auth/admin/users/{user['id']}", json=body, headers=admin), 422
        )


def test_last_admin_cannot_be_disabled(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    me = gateway.http.get("/auth/me", headers=admin).json()
    resp = gateway.http.patch(
        f"/auth/admin/users/{me['id']}", json={"disabled": True}, headers=admin
    )
    is_problem(resp, 409)


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_next_key(
    gateway: GatewayClient,
) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    before = gateway.login(user["username"]).access_token
    jwks_before = gateway.http.get("/auth/.well-known/jwks.json")
    assert jwks_before.headers["cache-control"] == "public, max-age=300"
    published_before = {k["kid"] for k in jwks_before.json()["keys"]}
    gateway.verify(before)
    old_kid = _kid(before)

    rotated = gateway.http.post("/auth/admin/signing-keys/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    rotation = rotated.json()
    assert rotation["retired_kid"] == old_kid
    # the new current key was already published before the rotation (no cache miss)
    assert rotation["current_kid"] in published_before

    after = gateway.login(user["username"]).access_token
    assert _kid(after) == rotation["current_kid"] != old_kid
    keys = gateway.jwks()
    assert {old_kid, rotation["current_kid"], rotation["next_kid"]} <= set(keys)
    for jwk in gateway.http.get("/auth/.well-known/jwks.json").json()["keys"]:
        assert (jwk["alg"], jwk["use"], jwk["kty"], jwk["crv"]) == (
            "Ed25519",
            "sig",
            "OKP",
            "Ed25519",
        )
        assert "d" not in jwk
    # the token signed before the rotation still verifies against the served JWKS
    assert verify_access_token(before, keys, issuer="switchboard-auth", audience="switchboard")

    listing = gateway.http.get("/auth/admin/signing-keys", headers=admin).json()["keys"]
    states = {k["kid"]: k for k in listing}
    assert states[old_kid]["state"] == "retired"
    assert states[old_kid]["published_until"] is not None
    assert states[rotation["current_kid"]]["state"] == "current"
    assert states[rotation["next_kid"]]["state"] == "next"


def _kid(token: str) -> str:
    header = token.split(".")[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def test_jwks_keys_are_public_okp_keys(gateway: GatewayClient) -> None:
    for key in gateway.jwks().values():
        assert isinstance(key, OKPKey)
        assert not key.is_private
