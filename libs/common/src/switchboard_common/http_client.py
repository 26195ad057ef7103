"""HTTP client factory: one ``httpx.AsyncClient`` per upstream, explicit timeouts and limits.

Create it in the lifespan, keep it on ``app.state``, close it on shutdown::

    client = create_http_client("http://127.0.0.1:11434", timeouts=HttpTimeouts(read_s=120))
"""

from __future__ import annotations

import httpx
from pydantic import BaseModel, Field


class HttpTimeouts(BaseModel):
    """Seconds. ``read_s`` is the longest gap between two received chunks."""

    connect_s: float = Field(default=2.0, gt=0)
    read_s: float = Field(default=30.0, gt=0)
    write_s: float = Field(default=30.0, gt=0)
    pool_s: float = Field(default=5.0, gt=0)


class HttpLimits(BaseModel):
    max_connections: int = Field(default=100, ge=1)
    max_keepalive_connections: int = Field(default=20, ge=0)
    keepalive_expiry_s: float = Field(default=30.0, ge=0)


def create_http_client(
    base_url: str = "",
    *,
    timeouts: HttpTimeouts | None = None,
    limits: HttpLimits | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    t = timeouts or HttpTimeouts()
    lim = limits or HttpLimits()
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(connect=t.connect_s, read=t.read_s, write=t.write_s, pool=t.pool_s),
        limits=httpx.Limits(
            max_connections=lim.max_connections,
            max_keepalive_connections=lim.max_keepalive_connections,
            keepalive_expiry=lim.keepalive_expiry_s,
        ),
        headers=headers,
        follow_redirects=False,
    )
