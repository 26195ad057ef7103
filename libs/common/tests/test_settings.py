"""Settings: env prefixes, validation messages, placeholder secrets refused outside local."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")
    api_secret: SecretStr = SecretStr("change-me")


def test_env_prefix_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "9999")
    monkeypatch.setenv("DEMO_LOG_LEVEL", "DEBUG")
    settings = DemoSettings()
    assert settings.port == 9999
    assert settings.log_level == "debug"


def test_bad_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        DemoSettings()


def test_placeholder_secret_allowed_locally() -> None:
    assert DemoSettings(environment="local").api_secret.get_secret_value() == "change-me"


def test_shared_internal_secret_placeholder_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="SWITCHBOARD_INTERNAL_SECRET"):
        DemoSettings(environment="production", api_secret=SecretStr("x" * 40))


@pytest.mark.parametrize("value", ["change-me", "", "  secret "])
def test_placeholder_secret_refused_in_production(value: str) -> None:
    with pytest.raises(ValidationError, match="DEMO_API_SECRET"):
        DemoSettings(environment="production", api_secret=SecretStr(value))


def test_real_secret_accepted_in_production() -> None:
    settings = DemoSettings(
        environment="production",
        api_secret=SecretStr("x" * 40),
        SWITCHBOARD_INTERNAL_SECRET=SecretStr("y" * 40),
    )
    assert settings.environment == "production"
