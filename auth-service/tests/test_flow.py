"""The user's path through a real auth process: register → token → me → refresh → reuse
detection → sessions → logout, with revocations observed in Redis as the gateway sees them.
"""

from __future__ import annotations

from auth_harness import (
    INTERNAL_SECRET,
    PASSWORD,
    GatewayClient,
    RevocationListener,
    Tokens,
    is_problem,
    unique_name,
)

from switchboard_common import IDENTITY_HEADER, SIGNATURE_HEADER, Principal, sign_identity


def test_register_token_me(gateway: GatewayClient) -> None:
    name = unique_name("Alice")
    user = gateway.register(name)
    assert user["username"] == name.lower()
    assert user["role"] == "user"
    assert user["tier"] == "free"
    assert "password" not in str(user)

    resp = gateway.token(name.lower(), PASSWORD)
    assert resp.headers["cache-control"] == "no-store"
    tokens = Tokens.from_response(resp)
    assert tokens.scope == "inference knowledge memory"
    assert tokens.expires_in == 900
    assert tokens.refresh_token.startswith("rt-")

    claims = gateway.verify(tokens.access_token)
    assert claims.sub == user["id"]
    assert claims.username == name.lower()
    assert (claims.role, claims.tier) == ("user", "free")

    me = gateway.http.get("/auth/me", headers=gateway.user_headers(tokens.access_token))
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user["id"]
    assert me.json()["session_id"] == claims.sid
    assert me.json()["scope"] == ["inference", "knowledge", "memory"]
    assert me.json()["auth"] == "user"


def test_login_with_narrower_scope(gateway: GatewayClient) -> None:
    name = gateway.register()["username"]
    tokens = gateway.login(name, scope="memory")
    assert tokens.scope == "memory"
    assert gateway.verify(tokens.access_token).scope == "memory"


def test_asking_for_a_scope_not_allowed_is_invalid_scope(gateway: GatewayClient) -> None:
    name = gateway.register()["username"]
    body = is_problem(gateway.token(name, PASSWORD, scope="inference admin"), 400)
    assert body["error"] == "invalid_scope"
    assert "admin" in body["error_description"]


def test_refresh_rotates_and_reuse_revokes_the_session(
    gateway: GatewayClient, revocations: RevocationListener
) -> None:
    name = gateway.register()["username"]
    first = gateway.login(name)
    sid = gateway.verify(first.access_token).sid

    second = Tokens.from_response(gateway.refresh(first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert gateway.verify(second.access_token).sid == sid  # same session, new tokens
    # the refresh_token grant on /auth/token works too
    third = Tokens.from_response(
        gateway.http.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": second.refresh_token},
        )
    )

    # the first token is spent: presenting it again is reuse → the whole session dies
    body = is_problem(gateway.refresh(first.refresh_token), 400)
    assert body["error"] == "invalid_grant"
    assert "already used" in body["detail"]
    assert revocations.wait_for({"sid": sid}, within_s=1.0) < 1.0
    assert 900 < revocations.revoked_sid_ttl(sid) <= 960

    # even the newest refresh token of that session is now refused
    assert is_problem(gateway.refresh(third.refresh_token), 400)["error"] == "invalid_grant"
    resp = gateway.http.get("/auth/me", headers=gateway.user_headers(third.access_token))
    assert resp.status_code == 200  # /me needs no session; the gateway refuses it by sid
    sessions = gateway.http.get("/auth/sessions", headers=gateway.user_headers(third.access_token))
    is_problem(sessions, 401)


def test_unknown_refresh_token_is_invalid_grant(gateway: GatewayClient) -> None:
    body = is_problem(gateway.refresh("rt-not-a-real-token"), 400)
    assert body["error"] == "invalid_grant"


def test_sessions_list_and_revoke_one(
    gateway: GatewayClient, revocations: RevocationListener
) -> None:
    name = gateway.register()["username"]
    laptop = gateway.login(name)
    phone = gateway.login(name)
    headers = gateway.user_headers(laptop.access_token)
    listed = gateway.http.get("/auth/sessions", headers=headers)
    assert listed.status_code == 200, listed.text
    sessions = listed.json()["sessions"]
    assert len(sessions) == 2
    assert {s["user_agent"] for s in sessions} == {"auth-tests/1.0"}
    assert all(s["ip"].startswith("198.51.") for s in sessions)  # X-Forwarded-For believed
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1
    assert current[0]["id"] == gateway.verify(laptop.access_token).sid

    phone_sid = gateway.verify(phone.access_token).sid
    resp = gateway.http.delete(f"/auth/sessions/{phone_sid}", headers=headers)
    assert resp.status_code == 204
    revocations.wait_for({"sid": phone_sid})
    assert is_problem(gateway.refresh(phone.refresh_token), 400)["error"] == "invalid_grant"
    remaining = gateway.http.get("/auth/sessions", headers=headers).json()["sessions"]
    assert [s["id"] for s in remaining] == [current[0]["id"]]


def test_cannot_revoke_someone_elses_session(gateway: GatewayClient) -> None:
    mine = gateway.login(gateway.register()["username"])
    theirs = gateway.login(gateway.register()["username"])
    their_sid = gateway.verify(theirs.access_token).sid
    resp = gateway.http.delete(
        f"/auth/sessions/{their_sid}", headers=gateway.user_headers(mine.access_token)
    )
    is_problem(resp, 404)
    assert gateway.refresh(theirs.refresh_token).status_code == 200


def test_logout_revokes_the_current_session(
    gateway: GatewayClient, revocations: RevocationListener
) -> None:
    tokens = gateway.login(gateway.register()["username"])
    sid = gateway.verify(tokens.access_token).sid
    headers = gateway.user_headers(tokens.access_token)
    assert gateway.http.post("/auth/logout", headers=headers).status_code == 204
    revocations.wait_for({"sid": sid})
    assert revocations.revoked_sid_ttl(sid) > 0
    assert is_problem(gateway.refresh(tokens.refresh_token), 400)["error"] == "invalid_grant"
    is_problem(gateway.http.post("/auth/logout", headers=headers), 401)


def test_direct_hit_without_credential_is_401(gateway: GatewayClient) -> None:
    for method, path in [
        ("GET", "/auth/me"),
        ("GET", "/auth/sessions"),
        ("POST", "/auth/logout"),
        ("GET", "/auth/api-keys"),
        ("GET", "/auth/admin/users"),
        ("POST", "/auth/internal/api-keys/verify"),
    ]:
        resp = gateway.http.request(method, path)
        body = is_problem(resp, 401)
        assert resp.headers["www-authenticate"] == "Bearer", path
        assert "gateway" in body["detail"]


def test_forged_or_stale_identity_headers_are_401(gateway: GatewayClient) -> None:
    user = gateway.register()
    principal = Principal(sub=user["id"], username=user["username"], kind="user", sid="x")
    forged_value, forged_sig = sign_identity(principal, "not-the-internal-secret")
    stale_value, stale_sig = sign_identity(principal, INTERNAL_SECRET, now=1_000_000)
    good_value, _ = sign_identity(principal, INTERNAL_SECRET)
    for value, signature in [
        (forged_value, forged_sig),
        (stale_value, stale_sig),
        (good_value, "00" * 32),
        ("e30", "zz"),
    ]:
        resp = gateway.http.get(
            "/auth/me", headers={IDENTITY_HEADER: value, SIGNATURE_HEADER: signature}
        )
        is_problem(resp, 401)


def test_public_routes_need_no_credential(gateway: GatewayClient) -> None:
    assert gateway.http.get("/auth/.well-known/jwks.json").status_code == 200
    assert gateway.http.get("/health").status_code == 200
    assert gateway.http.get("/auth/ping").json()["service"] == "auth"
