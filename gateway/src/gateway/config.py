"""Gateway settings: environment variables prefixed ``GATEWAY_``."""

from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from gateway.core.cache import DEFAULT_CACHE_ROUTES, parse_cache_routes
from gateway.models.limits import Limit, parse_limits
from gateway.models.priority import parse_priority_map
from switchboard_common import ServiceSettings
from switchboard_common.routes import DEFAULT_ANONYMOUS_RATE_LIMIT, DEFAULT_RATE_LIMITS


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

    # Each *_URL may list several instances, comma-separated (see docs/resilience.md).
    auth_url: str = Field(
        default="http://127.0.0.1:8001",
        description="The auth service; several instances comma-separated.",
    )
    inference_url: str = Field(
        default="http://127.0.0.1:8002",
        description="The inference service; several instances comma-separated.",
    )
    knowledge_url: str = Field(
        default="http://127.0.0.1:8003",
        description="The knowledge service; several instances comma-separated.",
    )
    memory_url: str = Field(
        default="http://127.0.0.1:8004",
        description="The memory service; several instances comma-separated.",
    )

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

    # --- tracing (see docs/observability.md#the-proxy-span) ---
    trace_lean: bool = Field(
        default=True,
        description="Open the proxy span with the gateway's lean tracer and export it with "
        "its own OTLP/HTTP exporter (a few µs per request; standard OTEL_* variables "
        "apply). `false`: use the OpenTelemetry SDK's tracer and span processors instead "
        "(~10x the CPU per span).",
    )

    openapi_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="The merged /openapi.json is rebuilt from the services' documents at "
        "most this often (a redeployed service shows up within this time).",
    )

    # --- upstream resilience (see docs/resilience.md) ---
    breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive transport failures (refused, reset, timeout before the "
        "response head) after which an instance's circuit breaker opens.",
    )
    breaker_open_s: float = Field(
        default=5.0,
        gt=0,
        description="How long an open breaker keeps requests away from its instance before "
        "one probe request is let through (half-open).",
    )
    retry_attempts: int = Field(
        default=2,
        ge=0,
        description="Extra tries, on another instance when there is one, for idempotent "
        "requests (GET, HEAD, OPTIONS, PUT, DELETE) with a buffered body that failed to "
        "connect or were dropped before any response byte. POST/PATCH are never retried.",
    )
    retry_backoff_base_s: float = Field(
        default=0.05,
        ge=0,
        description="Backoff before retry n is uniform in [0, min(cap, base * 2^(n-1))] "
        "(full jitter).",
    )
    retry_backoff_cap_s: float = Field(
        default=1.0, ge=0, description="Upper bound of one retry's backoff."
    )

    # --- rate limits (see docs/rate-limits.md) ---
    rate_limit_enabled: bool = Field(default=True, description="Enforce rate limits.")
    rate_limits: str = Field(
        default=DEFAULT_RATE_LIMITS,
        description="Per-tier limits per principal and service, e.g. `free=60/minute,"
        "pro=600/minute`; `default` covers tiers not listed; `0` means unlimited.",
    )
    anonymous_rate_limit: str = Field(
        default=DEFAULT_ANONYMOUS_RATE_LIMIT,
        description="Limit per client IP on public routes (`0`: none).",
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

    # --- token budgets (see docs/rate-limits.md#token-budgets) ---
    token_limits: str = Field(
        default="default=100000/minute,free=20000/minute,pro=200000/minute",
        description="Per-tier token budgets per principal on generation routes (chat, "
        "generate, completions, code review), e.g. `free=20000/minute`; `default` covers "
        "tiers not listed; `0` means unlimited. Uses the request limits' Redis timeout.",
    )
    token_estimate_max_completion: int = Field(
        default=512,
        ge=0,
        description="Completion tokens a generation is pre-charged at when it asks for none "
        "(max_tokens, options.num_predict), and the most it is pre-charged for; the actual "
        "usage replaces the estimate when the generation ends.",
    )

    speculative_admission: bool = Field(
        default=True,
        description="Send a budgeted streamed generation upstream while its rate-limit "
        "and token-budget checks are in Redis, when this replica last saw room for it; its "
        "answer waits for the checks, and a refusal closes the upstream request and answers "
        "429 (docs/rate-limits.md#streams-sent-ahead-of-their-checks). `false`: every check "
        "answers before anything is forwarded.",
    )

    @field_validator("token_limits")
    @classmethod
    def _valid_token_limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    # --- priorities (see docs/queue.md#where-priorities-come-from) ---
    priority_defaults: str = Field(
        default="default=5,pro=6",
        description="Queue priority (0..9) of an inference request that sends no X-Priority "
        "and whose API key sets none, per tier, e.g. `free=3,pro=6`; `default` covers tiers "
        "not listed.",
    )
    priority_caps: str = Field(
        default="default=6,pro=8",
        description="Highest queue priority (0..9) per tier; X-Priority, API-key and default "
        "priorities above it are lowered to it. A user's admin-set max_priority replaces "
        "it; admins may use 9. Keep it in step with INFERENCE_PRIORITY_CAPS.",
    )

    @field_validator("priority_defaults", "priority_caps")
    @classmethod
    def _valid_priorities(cls, value: str) -> str:
        parse_priority_map(value)
        return value

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

    # --- websockets and client limits (see docs/realtime.md) ---
    ws_idle_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A WebSocket with no message either way for this long is closed (1001, "
        "'idle timeout') on both sides. Pings do not count; send an application heartbeat "
        "to keep a quiet socket open.",
    )
    ws_max_message_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Largest WebSocket message, either way; a bigger one closes the socket "
        "with 1009. Unset: GATEWAY_MAX_BODY_BYTES.",
    )
    ws_max_per_principal: int = Field(
        default=32,
        ge=0,
        description="Open WebSockets one caller may hold on one gateway replica (429 at the "
        "handshake past it; counted per replica, not cluster-wide). 0: no cap.",
    )
    client_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest silence allowed from a client while its request body is "
        "incomplete; past it the request gets a 408 problem and the connection is closed.",
    )
    client_header_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request head (request line and headers) must be complete this long "
        "after the connection opened or its first byte arrived; else 408 and the connection "
        "is closed (slowloris).",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest total size of a request's header names and values; bigger "
        "requests get a 431 problem.",
    )
    max_header_count: int = Field(
        default=100, ge=8, description="Most header fields in one request (431 past it)."
    )

    # --- gateway response cache (see docs/caching.md#gateway-cache-get-responses) ---
    cache_enabled: bool = Field(
        default=True, description="Cache GET answers of the routes in GATEWAY_CACHE_ROUTES."
    )
    cache_routes: str = Field(
        default=DEFAULT_CACHE_ROUTES,
        description="JSON list of cached route groups: `tag`, `paths` (GET patterns: `*` one "
        "segment, trailing `**` any, leading `!` excludes), `ttl_s`, `public` (one entry for "
        "every caller) and `invalidated_by` (write paths whose 2xx invalidates the group).",
    )
    cache_max_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Largest response body kept in the cache."
    )
    cache_timeout_s: float = Field(
        default=0.05,
        gt=0,
        description="Longest wait for Redis on a cache lookup, store or invalidation; past "
        "it the request is proxied uncached and Redis is skipped for a second.",
    )

    @field_validator("cache_routes")
    @classmethod
    def _valid_cache_routes(cls, value: str) -> str:
        parse_cache_routes(value)
        return value

    # --- completion cache (see docs/caching.md#gateway-completion-cache) ---
    completion_cache_enabled: bool = Field(
        default=True,
        description="Answer repeated deterministic completions (temperature 0 or a seed) "
        "from the gateway, without the inference service. Needs GATEWAY_CACHE_ENABLED (it "
        "shares its Redis and the `models` group's invalidation).",
    )
    completion_cache_ttl_s: float = Field(
        default=600,
        gt=0,
        le=86_400,
        description="Seconds a completion stays in the gateway cache; keep it at most the "
        "inference service's INFERENCE_CACHE_TTL_S.",
    )
    completion_cache_max_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Largest completion (response body, stream included) kept in the gateway "
        "cache; larger ones are served by the inference service's cache only.",
    )

    @property
    def ws_message_limit(self) -> int:
        return self.ws_max_message_bytes or self.max_body_bytes

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
    def _plain_http_origins(cls, value: str) -> str:
        """One origin, or several comma-separated (instances of one service), each checked
        and normalised to ``http://host:port``."""
        origins = [_plain_http_origin(part) for part in value.split(",") if part.strip()]
        if not origins:
            raise ValueError("must name at least one http://host:port origin")
        if len(set(origins)) != len(origins):
            raise ValueError("lists the same instance twice")
        return ",".join(origins)

    @property
    def revocation_redis(self) -> str:
        return self.revocation_redis_url or self.redis_url

    def upstream_urls(self) -> dict[str, str]:
        """Service name → its setting as given (one origin, or several comma-separated)."""
        return {
            "auth": self.auth_url,
            "inference": self.inference_url,
            "knowledge": self.knowledge_url,
            "memory": self.memory_url,
        }

    def upstream_origins(self) -> dict[str, tuple[str, ...]]:
        """Service name → the origins of its instances (at least one each)."""
        return {service: tuple(urls.split(",")) for service, urls in self.upstream_urls().items()}


def _plain_http_origin(value: str) -> str:
    # Services sit on the internal network; TLS ends at the gateway (or the ingress).
    parts = urlsplit(value.strip())
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("must be an http://host:port URL (TLS ends at the gateway)")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("must be an origin (http://host:port), without a path")
    port = parts.port or 80
    return f"http://{parts.hostname}:{port}"
