"""auth service settings: environment variables prefixed ``AUTH_``.

Secrets (``AUTH_KEY_ENCRYPTION_SECRET``, ``AUTH_ADMIN_PASSWORD``, and the shared
``SWITCHBOARD_INTERNAL_SECRET``) are refused when empty or a placeholder outside local/test
runs. Argon2 parameters default to RFC 9106's second recommended option (64 MiB, t=3, p=4);
tests lower them through the environment, never here.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings

LOCAL_KEY_ENCRYPTION_SECRET = "local-dev-key-encryption-secret"  # noqa: S105 (local only)
DEFAULT_USER_SCOPES = "inference knowledge memory"
ADMIN_SCOPE = "admin"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore")

    service_name: str = "auth"
    port: int = 8001
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # storage
    data_dir: Path = Field(default=Path("data/auth"), description="Holds auth.db (SQLite).")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default sqlite+aiosqlite:///<data_dir>/auth.db. "
        "postgresql://… is used through asyncpg.",
    )
    key_encryption_secret: SecretStr = Field(
        default=SecretStr(LOCAL_KEY_ENCRYPTION_SECRET),
        description="Encrypts signing private keys at rest (AES-256-GCM, HKDF-derived key).",
    )

    # tokens
    issuer: str = Field(default="switchboard-auth", description="`iss` of access tokens.")
    audience: str = Field(default="switchboard", description="`aud` of access tokens.")
    access_token_ttl_s: int = Field(
        default=900, ge=30, le=24 * 3600, description="Access token lifetime (s)."
    )
    refresh_token_ttl_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        description="Refresh token lifetime (s); each refresh starts a new one (sliding).",
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="How long a replica trusts its in-memory key ring."
    )
    default_scopes: str = Field(
        default=DEFAULT_USER_SCOPES,
        description="Space-separated scopes every user may have (admins also get `admin`).",
    )

    # users
    registration_enabled: bool = Field(
        default=True, description="Whether POST /auth/register is open to anyone."
    )
    password_min_length: int = Field(default=10, ge=8, le=128, description="Password policy.")
    password_max_length: int = Field(default=256, ge=16, le=4096, description="Password policy.")
    admin_username: str | None = Field(
        default=None,
        min_length=3,
        max_length=64,
        description="With AUTH_ADMIN_PASSWORD: the admin created at start when none exists.",
    )
    admin_password: SecretStr | None = Field(
        default=None, description="Password of that first admin (must pass the policy)."
    )

    # brute-force protection
    lockout_max_failures: int = Field(
        default=5, ge=1, description="Failed logins per account before it is locked (429)."
    )
    lockout_window_s: int = Field(
        default=900, ge=1, description="Failure-counting window and lock duration (s)."
    )
    lockout_ip_max_failures: int = Field(
        default=20, ge=1, description="Failed logins per client IP before it is locked (429)."
    )

    # argon2id (argon2-cffi): memory_cost in KiB
    argon2_time_cost: int = Field(default=3, ge=1, description="argon2id iterations.")
    argon2_memory_cost: int = Field(default=65536, ge=8, description="argon2id memory (KiB).")
    argon2_parallelism: int = Field(default=4, ge=1, description="argon2id lanes.")
    hash_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Most argon2id hashes/verifications running at once per process. Each "
        "holds AUTH_ARGON2_MEMORY_COST KiB, so peak hashing memory is this × "
        "AUTH_ARGON2_MEMORY_COST KiB (default 2 × 64 MiB = 128 MiB).",
    )
    hash_queue_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Longest wait (s) for a free hashing slot; past it the login or "
        "registration gets a 503 problem with Retry-After instead of queueing on.",
    )

    # API keys
    api_key_touch_interval_s: int = Field(
        default=60, ge=1, description="last_used_at is written at most this often per key."
    )
    api_key_sweep_interval_s: float = Field(
        default=30.0, gt=0, description="How often expired API keys are revoked and published."
    )

    @property
    def resolved_database_url(self) -> str:
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'auth.db'}"
        for plain in ("postgres://", "postgresql://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url[len(plain) :]
        return url

    @property
    def revocation_ttl_s(self) -> int:
        """How long a revoked-session marker must outlive the tokens it voids."""
        return self.access_token_ttl_s + 60

    @property
    def default_scope_set(self) -> frozenset[str]:
        return frozenset(self.default_scopes.split())

    @model_validator(mode="after")
    def _check_auth_secrets(self) -> Settings:
        if (self.admin_username is None) != (self.admin_password is None):
            raise ValueError("set both AUTH_ADMIN_USERNAME and AUTH_ADMIN_PASSWORD, or neither")
        if self.argon2_memory_cost < 8 * self.argon2_parallelism:
            raise ValueError("AUTH_ARGON2_MEMORY_COST must be at least 8 × AUTH_ARGON2_PARALLELISM")
        if self.environment.is_local:
            return self
        if self.key_encryption_secret.get_secret_value() == LOCAL_KEY_ENCRYPTION_SECRET:
            raise ValueError(
                f"refusing to start in environment '{self.environment}': "
                "AUTH_KEY_ENCRYPTION_SECRET is the local placeholder. Set a real secret."
            )
        return self
