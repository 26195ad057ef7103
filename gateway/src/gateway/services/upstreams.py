"""The upstream services and the clients used to reach them.

A service may run several instances (``GATEWAY_<SERVICE>_URL`` lists them, comma-separated);
each service gets a :class:`~gateway.services.balancer.Balancer` over its instances.

Two kinds of client, created in the gateway's lifespan and closed on shutdown:
- one lean keep-alive :class:`UpstreamClient` per instance for the HTTP proxy hot path;
- one shared aiohttp session for WebSockets and the gateway's own health calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp

from gateway.config import Settings
from gateway.services.balancer import Balancer, Instance
from switchboard_common.lean_http import UpstreamClient

T = TypeVar("T")


class UpstreamPool:
    """The instances of every service (a balancer each) plus the shared client session
    (``None`` until started)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        origins = settings.upstream_origins()
        # service → its first instance; mostly used for the list of service names. Calls
        # go through base_url(), which picks an instance whose breaker is closed.
        self.base_urls: dict[str, str] = {s: urls[0] for s, urls in origins.items()}
        self.balancers: dict[str, Balancer] = {
            service: Balancer(
                service,
                [Instance(service, url, self._client(url)) for url in urls],
                failure_threshold=settings.breaker_failures,
                open_s=settings.breaker_open_s,
            )
            for service, urls in origins.items()
        }
        self._session: aiohttp.ClientSession | None = None
        self._ws_session: aiohttp.ClientSession | None = None
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout_s,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )

    def _client(self, origin: str) -> UpstreamClient:
        parts = urlsplit(origin)
        assert parts.hostname is not None
        assert parts.port is not None
        return UpstreamClient(
            parts.hostname,
            parts.port,
            connect_timeout_s=self.settings.connect_timeout_s,
            keepalive_s=self.settings.upstream_keepalive_s,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamPool used before start(); is the lifespan running?")
        return self._session

    @property
    def ws_session(self) -> aiohttp.ClientSession:
        """WebSockets get their own connections: many long-lived sockets must never starve
        the control calls (JWKS, API-key checks, health) of connections."""
        if self._ws_session is None:
            raise RuntimeError("UpstreamPool used before start(); is the lifespan running?")
        return self._ws_session

    async def start(self) -> None:
        self._session = self._new_session(limit=64)
        self._ws_session = self._new_session(limit=self.settings.upstream_max_connections)

    def _new_session(self, *, limit: int) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=limit,
            limit_per_host=0,
            keepalive_timeout=self.settings.upstream_keepalive_s,
            ttl_dns_cache=60,
            enable_cleanup_closed=False,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def close(self) -> None:
        for balancer in self.balancers.values():
            for inst in balancer.instances:
                inst.client.close()
        for session in (self._session, self._ws_session):
            if session is not None:
                await session.close()
        self._session = self._ws_session = None

    async def attempt(self, service: str, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(origin)`` for a call outside the proxy (API-key checks, WebSocket
        connects): an instance whose breaker is closed; a connect failure counts against
        that instance's breaker (so these calls eject a dead instance too, not only
        proxied traffic) and the call is made once more on another instance, if any."""
        balancer = self.balancers[service]
        inst = balancer.peek()
        try:
            result = await call(inst.origin)
        except aiohttp.ClientConnectorError:
            balancer.failed(inst)
            other = balancer.peek()
            if other is inst:
                raise
            inst = other
            result = await call(inst.origin)  # a second failure is the caller's to report
        if inst.failures:
            balancer.succeeded(inst)
        return result

    def base_url(self, service: str) -> str:
        """An instance's origin for a call outside the proxy hot path (WebSockets, health
        relays, JWKS): round-robin over instances whose breaker is closed."""
        return self.balancers[service].peek().origin
