"""Schemas of the gateway's aggregated health."""

from typing import Literal

from pydantic import BaseModel


class UpstreamHealth(BaseModel):
    status: Literal["ok", "down"]
    url: str
    latency_ms: float
    error: str | None = None
    # the gateway's circuit breaker toward this instance (docs/resilience.md)
    breaker: Literal["closed", "half_open", "open"] | None = None
    # a service with several instances: "ok" when at least one is; each one here
    instances: dict[str, "UpstreamHealth"] | None = None


class GatewayHealth(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    upstreams: dict[str, UpstreamHealth]
