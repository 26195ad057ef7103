"""Auth settings: defaults, database URL, and secrets refused outside local runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from auth_service.config import Settings

# internal_secret is set through its alias (the env var name), as pydantic-settings wants
REAL = {
    "SWITCHBOARD_INTERNAL_SECRET": SecretStr("a-real-internal-secret-0123456789"),
    "key_encryption_secret": SecretStr("a-real-key-encryption-secret-012345"),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SWITCHBOARD_INTERNAL_SECRET", "AUTH_KEY_ENCRYPTION_SECRET", "AUTH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_contract() -> None:
    settings = Settings()
    assert settings.issuer == "switchboard-auth"
    assert settings.audience == "switchboard"
    assert settings.access_token_ttl_s == 900
    assert settings.refresh_token_ttl_s == 30 * 24 * 3600
    assert settings.registration_enabled is True
    assert settings.password_min_length == 10
    assert (settings.lockout_max_failures, settings.lockout_window_s) == (5, 900)
    assert settings.lockout_ip_max_failures == 20
    assert (settings.argon2_time_cost, settings.argon2_memory_cost) == (3, 65536)
    assert (settings.hash_concurrency, settings.hash_queue_timeout_s) == (2, 5.0)
    assert settings.revocation_ttl_s == 960


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "auth")
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/auth/auth.db"


def test_postgres_urls_use_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql://u:p@db:5432/auth")
    assert Settings().resolved_database_url == "postgresql+asyncpg://u:p@db:5432/auth"


def test_internal_secret_comes_from_the_unprefixed_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_INTERNAL_SECRET", "shared-by-everyone-123")
    assert Settings().internal_secret.get_secret_value() == "shared-by-everyone-123"


def test_production_with_real_secrets_starts() -> None:
    assert Settings(environment="production", **REAL).environment == "production"


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("SWITCHBOARD_INTERNAL_SECRET", "SWITCHBOARD_INTERNAL_SECRET"),
        ("key_encryption_secret", "AUTH_KEY_ENCRYPTION_SECRET"),
    ],
)
def test_placeholder_secrets_are_refused_outside_local(field: str, variable: str) -> None:
    values = {**REAL}
    values.pop(field)
    with pytest.raises(ValidationError, match=variable):
        Settings(environment="production", **values)


def test_placeholder_admin_password_is_refused_outside_local() -> None:
    with pytest.raises(ValidationError, match="AUTH_ADMIN_PASSWORD"):
        Settings(
            environment="staging",
            admin_username="root",
            admin_password=SecretStr("changeme"),
            **REAL,
        )


def test_admin_username_and_password_come_together() -> None:
    with pytest.raises(ValidationError, match="both"):
        Settings(admin_username="root")
