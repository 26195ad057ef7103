"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` with its own env prefix::

    class Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="AUTH_")
        service_name: str = "auth"
        port: int = 8001

Settings are validated once at start; a bad value stops the process with a message
naming the variable. Secrets are ``SecretStr`` fields: outside local/test runs a secret
that is empty or a known placeholder ("change-me", …) refuses to start.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOCAL_INTERNAL_SECRET = "local-dev-internal-secret"  # noqa: S105 (refused outside local runs)

PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "change_me",
        "secret",
        "password",
        "placeholder",
        "dev",
        "test",
        LOCAL_INTERNAL_SECRET,
    }
)

MiB = 1024 * 1024

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Environment(StrEnum):
    """Where the process runs; decides how strict secret checks are."""

    LOCAL = "local"
    TEST = "test"
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"

    @property
    def is_local(self) -> bool:
        return self in (Environment.LOCAL, Environment.TEST)


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set ``env_prefix`` and defaults."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    service_name: str = "service"
    version: str = "0.1.0"
    environment: Environment = Field(
        default=Environment.LOCAL,
        description="local, test, development, staging or production. Outside local/test, "
        "empty or placeholder secrets stop the service.",
    )
    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = Field(default="info", description="debug, info, warning, error.")
    log_json: bool = Field(default=True, description="JSON log lines (false: plain text).")
    access_log: bool = Field(default=False, description="One log line per request.")
    trusted_proxies: str = Field(
        default="127.0.0.1",
        description="Comma-separated IPs/CIDRs whose X-Forwarded-For/-Proto are believed "
        "(the gateway, a load balancer). Empty: believe nobody.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis for this service's shared state."
    )
    redis_max_connections: int = Field(
        default=64, ge=1, description="Pool size; a burst beyond it waits for a connection."
    )
    redis_timeout_s: float = Field(
        default=2.0, gt=0, description="Redis connect, command and pool-wait timeout (s)."
    )
    max_body_bytes: int = Field(
        default=10 * MiB, ge=1, description="Larger request bodies get a 413 problem."
    )
    ready_check_timeout_s: float = Field(
        default=2.0, gt=0, description="Each /ready dependency check must answer within this."
    )
    internal_secret: SecretStr = Field(
        default=SecretStr(LOCAL_INTERNAL_SECRET),
        validation_alias=AliasChoices("SWITCHBOARD_INTERNAL_SECRET"),
        description="HMAC key of the gateway-signed identity headers (switchboard_common."
        "identity); one value shared by the gateway and every service, no per-service prefix.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment.is_local:
            return self
        bad = [
            name
            for name, value in self._secret_fields()
            if value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ]
        if bad:
            names = ", ".join(self._env_name(name) for name in bad)
            raise ValueError(
                f"refusing to start in environment '{self.environment}': {names} is empty or a "
                "placeholder. Set a real secret (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)."
            )
        return self

    def _env_name(self, field: str) -> str:
        """The env var that sets ``field``: its alias when it has one, else prefix + name."""
        alias = type(self).model_fields[field].validation_alias
        if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
            return alias.choices[0]
        return str(self.model_config.get("env_prefix", "")).upper() + field.upper()

    def _secret_fields(self) -> list[tuple[str, SecretStr]]:
        found: list[tuple[str, SecretStr]] = []
        for name in type(self).model_fields:
            value: Any = getattr(self, name)
            if isinstance(value, SecretStr):
                found.append((name, value))
        return found
