"""Run a service under uvicorn with the settings every service shares."""

from __future__ import annotations

import importlib.util
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from switchboard_common.app import freeze_after_startup
from switchboard_common.settings import ServiceSettings
from switchboard_common.telemetry import instrument_clients


def http_protocol(head_timeout_s: float | None = None) -> type[Any] | str:
    """httptools with head+body write coalescing when available, else uvicorn's choice.

    With ``head_timeout_s``, also a deadline for request heads and problem+json answers to
    unparseable requests (``switchboard_common.http_guard``): for a server facing clients.
    """
    if importlib.util.find_spec("httptools") is None:
        return "h11"
    from switchboard_common.http_protocol import coalescing_protocol

    protocol = coalescing_protocol()
    if head_timeout_s is None:
        return protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from switchboard_common.http_guard import guarded

    return guarded(HttpToolsProtocol if isinstance(protocol, str) else protocol, head_timeout_s)


def serve(app: ASGIApp | str, settings: ServiceSettings, *, factory: bool = False) -> None:
    """Blocking: serve ``app`` on ``settings.host:settings.port`` until SIGTERM/SIGINT."""
    instrument_clients()
    freeze_after_startup()  # startup objects leave the garbage collector's full passes
    # Only settings of a server facing clients directly (the gateway's) define a deadline
    # for request heads; services sit behind the gateway, which sends heads at once.
    head_timeout_s: float | None = getattr(settings, "client_header_timeout_s", None)
    # A server that bounds WebSocket messages itself (the gateway) has uvicorn refuse a
    # bigger one (close 1009) before buffering it, instead of uvicorn's own 16 MiB.
    ws_max_size: int = getattr(settings, "ws_message_limit", 16 * 1024 * 1024)
    uvicorn.run(
        app,
        factory=factory,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http_protocol(head_timeout_s),
        ws_max_size=ws_max_size,
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
