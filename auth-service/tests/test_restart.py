"""Restarting the auth process on the same data dir: users, sessions, refresh tokens, API
keys and signing keys survive; settings change (registration disabled) take effect; a
wrong key-encryption secret refuses to start. One data dir, three starts, to keep it quick.
"""

from __future__ import annotations

import os

import pytest
from auth_harness import PASSWORD, GatewayClient, StartAuth, Tokens, is_problem

from auth_service.core.tokens import verify_access_token
from switchboard_devtools.process import ProcessFailed


def test_restart_keeps_state_applies_settings_and_guards_keys(start_auth: StartAuth) -> None:
    first = start_auth()
    client = GatewayClient(first)
    try:
        user = client.register()
        tokens = client.login(user["username"])
        headers = client.user_headers(tokens.access_token)
        key = client.http.post("/auth/api-keys", json={"name": "ci"}, headers=headers).json()
        kids_before = set(client.jwks())
    finally:
        client.close()
    first.stop()
    if "AUTH_DATABASE_URL" not in os.environ:  # set it to run these tests on PostgreSQL
        assert (first.data_dir / "auth.db").is_file()

    second = start_auth(data_dir=first.data_dir, AUTH_REGISTRATION_ENABLED="false")
    client = GatewayClient(second)
    try:
        assert set(client.jwks()) == kids_before  # same signing keys, no new ones
        # the access token minted before the restart still verifies
        claims = verify_access_token(
            tokens.access_token, client.jwks(), issuer="switchboard-auth", audience="switchboard"
        )
        assert claims.sub == user["id"]
        # the session and its refresh token survived
        headers = client.user_headers(tokens.access_token)
        sessions = client.http.get("/auth/sessions", headers=headers)
        assert sessions.status_code == 200, sessions.text
        assert [s["id"] for s in sessions.json()["sessions"]] == [claims.sid]
        refreshed = Tokens.from_response(client.refresh(tokens.refresh_token))
        assert client.verify(refreshed.access_token).sid == claims.sid
        # the API key still verifies; the password still logs in
        verified = client.verify_api_key(key["key"])
        assert verified.status_code == 200, verified.text
        assert verified.json()["api_key_id"] == key["id"]
        assert client.login(user["username"], PASSWORD).access_token
        # the new setting applies: registration is closed
        resp = client.http.post("/auth/register", json={"username": "late", "password": PASSWORD})
        body = is_problem(resp, 403)
        assert body["type"] == "urn:switchboard:problem:registration-disabled"
    finally:
        client.close()
    second.stop()

    with pytest.raises(ProcessFailed) as info:
        start_auth(data_dir=first.data_dir, AUTH_KEY_ENCRYPTION_SECRET="a-different-secret-999")
    message = str(info.value)
    assert "AUTH_KEY_ENCRYPTION_SECRET" in message
    assert "a-different-secret-999" not in message
