"""inference service settings: environment variables prefixed ``INFERENCE_``."""

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from inference_service.services.admission import parse_priority_caps
from switchboard_common import ServiceSettings

# priority_cap() runs on every generation's path: the caps string is parsed once per value
_parsed_caps = lru_cache(maxsize=4)(parse_priority_caps)


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_", extra="ignore")

    service_name: str = "inference"
    port: int = Field(default=8002, ge=1, le=65535, description="TCP port to listen on.")
    ollama_urls: str = Field(
        default="http://127.0.0.1:11434",
        description="Comma-separated Ollama base URLs; a request goes to a healthy backend "
        "that has the model.",
    )
    ollama_connect_timeout_s: float = Field(
        default=2.0, gt=0, description="Connect timeout to an Ollama backend (s)."
    )
    ollama_read_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest wait between two chunks from Ollama (s), incl. time to first token.",
    )
    ollama_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries on connect errors, 5xx and 503-busy, before the first chunk only.",
    )
    ollama_backoff_base_s: float = Field(
        default=0.1, ge=0, description="First retry delay (s); doubles each attempt."
    )
    ollama_backoff_max_s: float = Field(
        default=2.0, ge=0, description="Upper bound of one retry delay (s)."
    )
    ollama_backoff_jitter_s: float = Field(
        default=0.1, ge=0, description="Random extra delay (0..jitter s) added to each retry."
    )
    model_refresh_interval_s: float = Field(
        default=30.0, gt=0, description="How long a backend's cached model list is trusted (s)."
    )
    breaker_threshold: int = Field(
        default=3,
        ge=1,
        description="Consecutive failures that open a backend's circuit breaker.",
    )
    breaker_cooldown_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an open breaker rejects traffic before one half-open probe.",
    )
    priority_caps: str = Field(
        default="default=6,pro=8",
        description="Highest queue priority (0..9) each tier may ask for with X-Priority or "
        "`priority`; `default` covers unlisted tiers; admins may use 9. Higher asks are "
        "lowered to the cap.",
    )

    def priority_cap(self, tier: str, role: str) -> int:
        if role == "admin":
            return 9
        caps = _parsed_caps(self.priority_caps)
        return caps.get(tier, caps.get("default", 9))

    @field_validator("priority_caps")
    @classmethod
    def _valid_caps(cls, value: str) -> str:
        parse_priority_caps(value)
        return value

    max_prompt_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Largest prompt/messages/input text accepted (UTF-8 bytes); more is 413.",
    )
    code_max_bytes: int = Field(
        default=200 * 1024,
        ge=1,
        le=8 * 1024 * 1024,
        description="Largest source accepted by POST /code/analyze (UTF-8 bytes); more is 413.",
    )
    usage_retention_days: int = Field(
        default=90, ge=1, description="Days a per-user daily usage record is kept in Redis."
    )

    # --- token budgets (see docs/rate-limits.md#token-budgets) ---
    gateway_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The gateway (any replica, or their Service) that receives each "
        "reserved generation's actual usage to settle token budgets; empty: do not report "
        "(the gateway's estimates then stand).",
    )
    cache_enabled: bool = Field(
        default=True,
        description="Cache deterministic completions (options.temperature 0 or options.seed "
        "set) in Redis and replay them in any wire format (docs/caching.md).",
    )
    cache_ttl_s: int = Field(
        default=3600, ge=1, description="Seconds a cached completion is kept in Redis."
    )
    cache_max_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Largest cached entry (serialised bytes); larger answers are not cached.",
    )
