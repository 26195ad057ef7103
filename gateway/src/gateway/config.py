"""Gateway settings: environment variables prefixed ``GATEWAY_``."""

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from switchboard_common import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = 8000
    # The gateway is the edge: a client's X-Forwarded-For is not believed unless an operator
    # puts a load balancer in front and lists it here.
    trusted_proxies: str = ""

    auth_url: str = "http://127.0.0.1:8001"
    inference_url: str = "http://127.0.0.1:8002"
    knowledge_url: str = "http://127.0.0.1:8003"
    memory_url: str = "http://127.0.0.1:8004"

    connect_timeout_s: float = Field(default=2.0, gt=0, description="Upstream connect timeout.")
    read_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest silence allowed from an upstream, before or between body chunks. "
        "A stream that keeps sending bytes may last longer.",
    )
    upstream_max_connections: int = Field(default=1024, ge=1)
    upstream_keepalive_s: float = Field(default=30.0, ge=0)
    health_timeout_s: float = Field(default=1.0, gt=0)
    trace_proxy: bool = Field(
        default=True, description="Open a span per proxied request and send its traceparent."
    )

    @field_validator("auth_url", "inference_url", "knowledge_url", "memory_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    def upstream_urls(self) -> dict[str, str]:
        """Service name → base URL."""
        return {
            "auth": self.auth_url,
            "inference": self.inference_url,
            "knowledge": self.knowledge_url,
            "memory": self.memory_url,
        }
