"""Gateway settings: environment variables prefixed ``GATEWAY_``."""

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from gateway.models.limits import Limit, parse_limits
from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
    # The gateway is the edge: a client's X-Forwarded-For is not believed unless an operator
    # puts a load balancer in front and lists it here.
    trusted_proxies: str = Field(
        default="",
        description="IPs/CIDRs of load balancers in front of the gateway whose "
        "X-Forwarded-For is believed. Empty: the gateway is the edge.",
    )

    auth_url: str = Field(default="http://127.0.0.1:8001", description="The auth service.")
    inference_url: str = Field(
        default="http://127.0.0.1:8002", description="The inference service."
    )
    knowledge_url: str = Field(
        default="http://127.0.0.1:8003", description="The knowledge service."
    )
    memory_url: str = Field(default="http://127.0.0.1:8004", description="The memory service.")

    connect_timeout_s: float = Field(default=2.0, gt=0, description="Upstream connect timeout.")
    read_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest silence allowed from an upstream, before or between body chunks. "
        "A stream that keeps sending bytes may last longer.",
    )
    upstream_max_connections: int = Field(
        default=1024, ge=1, description="Connections kept for WebSockets and health calls."
    )
    upstream_keepalive_s: float = Field(
        default=30.0,
        ge=0,
        description="Idle keep-alive connections older than this are not reused; keep it "
        "below the services' own keep-alive timeout (75 s).",
    )
    health_timeout_s: float = Field(
        default=1.0, gt=0, description="Each service's /health must answer within this."
    )
    trace_proxy: bool | None = Field(
        default=None,
        description="Open a span per proxied request and send its traceparent. Default: on "
        "when spans are exported (OTEL_EXPORTER_OTLP_ENDPOINT set); when off, a client's "
        "traceparent is still forwarded unchanged.",
    )

    openapi_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="The merged /openapi.json is rebuilt from the services' documents at "
        "most this often (a redeployed service shows up within this time).",
    )

    # --- rate limits (see docs/rate-limits.md) ---
    rate_limit_enabled: bool = Field(default=True, description="Enforce rate limits.")
    rate_limits: str = Field(
        default="default=120/minute,free=120/minute,pro=1200/minute",
        description="Per-tier limits per principal and service, e.g. `free=60/minute,"
        "pro=600/minute`; `default` covers tiers not listed; `0` means unlimited.",
    )
    anonymous_rate_limit: str = Field(
        default="60/minute", description="Limit per client IP on public routes (`0`: none)."
    )
    rate_limit_timeout_s: float = Field(
        default=0.05,
        gt=0,
        description="Longest wait for Redis on a rate-limit check; past it the request is "
        "served (fail open) and Redis is skipped for a second.",
    )
    rate_limit_lease_max: int = Field(
        default=16,
        ge=1,
        description="Most slots a replica takes in one Redis call (1: exact per request).",
    )

    # --- authentication (see docs/auth.md) ---
    auth_issuer: str = Field(
        default="switchboard-auth", description="Expected `iss` of access tokens."
    )
    auth_audience: str = Field(default="switchboard", description="Expected `aud`.")
    jwt_leeway_s: int = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat (s)."
    )
    jwks_refresh_s: float = Field(
        default=300.0, gt=0, description="How often the cached JWKS is refreshed in the background."
    )
    jwks_min_refetch_s: float = Field(
        default=5.0,
        ge=0,
        description="A token with an unknown kid refetches the JWKS at most this often.",
    )
    token_cache_size: int = Field(
        default=10_000, ge=1, description="Verified tokens kept (LRU) so a token is checked once."
    )
    api_key_cache_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a verified API key is trusted without asking auth.",
    )
    revocation_redis_url: str | None = Field(
        default=None,
        description="The auth service's Redis database (revoked sessions, revocation "
        "channel). Unset: GATEWAY_REDIS_URL. Point it at AUTH_REDIS_URL's database.",
    )
    forward_auth_enabled: bool = Field(
        default=False,
        description="Serve /gateway/verify (forwardAuth for Traefik/nginx). It hands out "
        "signed identity headers, so only GATEWAY_FORWARD_AUTH_ALLOWED_FROM may call it.",
    )
    forward_auth_allowed_from: str = Field(
        default="127.0.0.1/32,::1/128",
        description="Comma-separated networks allowed to call /gateway/verify.",
    )
    public_paths: str = Field(
        default="",
        description="Extra comma-separated paths reachable without a credential; a trailing "
        "`*` makes a prefix (e.g. `/knowledge/public/*`).",
    )

    @field_validator("rate_limits")
    @classmethod
    def _valid_limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    @field_validator("anonymous_rate_limit")
    @classmethod
    def _valid_anonymous_limit(cls, value: str) -> str:
        if value.strip().lower() not in ("", "0", "none"):
            Limit.parse(value)
        return value

    @field_validator("auth_url", "inference_url", "knowledge_url", "memory_url")
    @classmethod
    def _plain_http_origin(cls, value: str) -> str:
        # Services sit on the internal network; TLS ends at the gateway (or the ingress).
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("must be an http://host:port URL (TLS ends at the gateway)")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("must be an origin (http://host:port), without a path")
        port = parts.port or 80
        return f"http://{parts.hostname}:{port}"

    @property
    def revocation_redis(self) -> str:
        return self.revocation_redis_url or self.redis_url

    def upstream_urls(self) -> dict[str, str]:
        """Service name → base URL."""
        return {
            "auth": self.auth_url,
            "inference": self.inference_url,
            "knowledge": self.knowledge_url,
            "memory": self.memory_url,
        }
