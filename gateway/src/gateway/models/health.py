"""Schemas of the gateway's aggregated health."""

from typing import Literal

from pydantic import BaseModel


class UpstreamHealth(BaseModel):
    status: Literal["ok", "down"]
    url: str
    latency_ms: float
    error: str | None = None


class GatewayHealth(BaseModel):
    status: Literal["ok", "degraded"]
    service: str
    version: str
    upstreams: dict[str, UpstreamHealth]
