"""Per-user overrides (rate limit, priority cap) set by admins, and per-API-key priorities,
through a real auth process: stored, validated, carried in tokens (``rl``/``mxp``) and in
the gateway's API-key answer; plus the migration that adds them to an existing database."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from alembic import command
from auth_harness import GatewayClient, is_problem
from sqlalchemy import Connection, text

from auth_service.db.engine import create_engine
from auth_service.db.migrate import alembic_config, apply_migrations


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def _patch(gateway: GatewayClient, admin: dict[str, str], user_id: str, body: Any) -> Any:
    return gateway.http.patch(f"/auth/admin/users/{user_id}", json=body, headers=admin)


def test_admin_sets_and_clears_overrides_which_tokens_carry(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    assert (user["rate_limit"], user["max_priority"]) == (None, None)
    plain = gateway.login(user["username"]).access_token
    # no override: the claims are absent, so tokens look exactly as before
    assert "rl" not in _claims(plain) and "mxp" not in _claims(plain)

    resp = _patch(gateway, admin, user["id"], {"rate_limit": " 300 / Minute ", "max_priority": 4})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["rate_limit"], resp.json()["max_priority"]) == ("300/minute", 4)
    shown = gateway.http.get(f"/auth/admin/users/{user['id']}", headers=admin).json()
    assert (shown["rate_limit"], shown["max_priority"]) == ("300/minute", 4)

    token = gateway.login(user["username"]).access_token
    claims = gateway.verify(token)
    assert (claims.rl, claims.mxp) == ("300/minute", 4)

    # a change of another field leaves the overrides alone (omitted ≠ null)
    assert _patch(gateway, admin, user["id"], {"tier": "pro"}).json()["max_priority"] == 4
    # explicit null: back to the tier's default
    cleared = _patch(gateway, admin, user["id"], {"rate_limit": None}).json()
    assert (cleared["rate_limit"], cleared["max_priority"]) == (None, 4)
    claims = gateway.verify(gateway.login(user["username"]).access_token)
    assert (claims.rl, claims.mxp, claims.tier) == (None, 4, "pro")

    unlimited = _patch(gateway, admin, user["id"], {"rate_limit": "none", "max_priority": None})
    assert (unlimited.json()["rate_limit"], unlimited.json()["max_priority"]) == ("unlimited", None)


def test_bad_overrides_are_422_naming_the_field(gateway: GatewayClient) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    for body in (
        {"rate_limit": "lots"},
        {"rate_limit": "0/minute"},  # would lock the user out
        {"rate_limit": "٣/minute"},  # non-ASCII digits
        {"rate_limit": "1/" + "9" * 40 + "s"},
        {"rate_limit": 300},
        {"max_priority": 10},
        {"max_priority": -1},
        {"max_priority": True},
        {"max_priority": "5"},
        {"max_priority": 4.5},
    ):
        body_json = is_problem(_patch(gateway, admin, user["id"], body), 422)
        assert next(iter(body)) in body_json["detail"], body_json
    # a number JSON cannot hold as an int (parsed as infinity) is refused, not a crash
    raw = gateway.http.patch(
        f"/auth/admin/users/{user['id']}",
        content=b'{"max_priority": 1e309}',
        headers={**admin, "content-type": "application/json"},
    )
    is_problem(raw, 422)
    assert (
        gateway.http.get(f"/auth/admin/users/{user['id']}", headers=admin).json()["max_priority"]
        is None
    )


def test_api_key_priority_is_chosen_at_creation_and_capped_by_the_owner(
    gateway: GatewayClient,
) -> None:
    admin = gateway.login_as_admin()
    user = gateway.register()
    headers = gateway.user_headers(gateway.login(user["username"]).access_token)

    def create(**body: Any) -> Any:
        return gateway.http.post("/auth/api-keys", json={"name": "k", **body}, headers=headers)

    created = create(priority=2)
    assert created.status_code == 201, created.text
    assert created.json()["priority"] == 2
    assert (
        gateway.http.get("/auth/api-keys", headers=headers).json()["api_keys"][0]["priority"] == 2
    )
    verified = gateway.verify_api_key(created.json()["key"]).json()
    assert (verified["priority"], verified["max_priority"], verified["rate_limit"]) == (
        2,
        None,
        None,
    )
    assert create().json()["priority"] is None  # omitted: the owner's default

    for bad in (10, -1, "high", True, 2.5):
        is_problem(create(priority=bad), 422)

    # the owner's cap: refused above it at creation, and lowered at verification after
    _patch(gateway, admin, user["id"], {"max_priority": 1, "rate_limit": "5/minute"})
    above = is_problem(create(priority=3), 422)
    assert above["max_priority"] == 1
    assert "above the highest" in above["detail"]
    verified = gateway.verify_api_key(created.json()["key"]).json()
    assert (verified["priority"], verified["max_priority"], verified["rate_limit"]) == (
        1,
        1,
        "5/minute",
    )


def _rows(connection: Connection) -> list[Any]:
    return list(connection.execute(text("SELECT username, rate_limit, max_priority FROM users")))


async def test_migration_adds_the_columns_to_an_existing_database(tmp_path: Path) -> None:
    """A database at revision 0001 with a user in it upgrades in place; nothing is lost."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/auth.db")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(
                lambda c: command.upgrade(alembic_config(c), "0001")  # the schema before
            )
            await connection.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, role, tier, created_at, "
                    "updated_at) VALUES ('u1', 'old', 'x', 'user', 'free', "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
        await apply_migrations(engine)
        async with engine.connect() as connection:
            rows = await connection.run_sync(_rows)
            columns = await connection.run_sync(
                lambda c: [r[1] for r in c.execute(text("PRAGMA table_info(api_keys)"))]
            )
    finally:
        await engine.dispose()
    assert rows == [("old", None, None)]
    assert "priority" in columns
