"""Run a service under uvicorn with the settings every service shares."""

from __future__ import annotations

import importlib.util
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from switchboard_common.settings import ServiceSettings
from switchboard_common.telemetry import instrument_clients


def http_protocol() -> type[Any] | str:
    """httptools with head+body write coalescing when available, else uvicorn's choice."""
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from switchboard_common.http_protocol import coalescing_protocol

    return coalescing_protocol()


def serve(app: ASGIApp | str, settings: ServiceSettings, *, factory: bool = False) -> None:
    """Blocking: serve ``app`` on ``settings.host:settings.port`` until SIGTERM/SIGINT."""
    instrument_clients()
    uvicorn.run(
        app,
        factory=factory,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http_protocol(),
        log_config=None,
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        timeout_graceful_shutdown=10,
        # Above the gateway's idle-connection reuse window (30 s), so the gateway never
        # sends a request on a connection this server is about to close.
        timeout_keep_alive=75,
    )
