"""Run a service under uvicorn with the settings every service shares."""

from __future__ import annotations

import importlib.util

import uvicorn
from starlette.types import ASGIApp

from switchboard_common.settings import ServiceSettings


def serve(app: ASGIApp | str, settings: ServiceSettings, *, factory: bool = False) -> None:
    """Blocking: serve ``app`` on ``settings.host:settings.port`` until SIGTERM/SIGINT."""
    uvicorn.run(
        app,
        factory=factory,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        log_config=None,
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=bool(settings.trusted_proxies.strip()),
        forwarded_allow_ips=settings.trusted_proxies.strip() or None,
        timeout_graceful_shutdown=10,
    )
