"""The public route table: which path prefix belongs to which service.

Prefixes match on segment boundaries: ``/auth`` serves ``/auth`` and ``/auth/token`` but
not ``/authority``. Paths are forwarded unchanged (services mount their routes under the
same prefixes), so a direct call to a service uses the same path as a call through the
gateway.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchboard_common.routes import ROUTES

__all__ = ["ROUTES", "RouteTable"]


class RouteTable:
    """Resolve a request path to the service that owns it, in O(1) on the first segment."""

    def __init__(self, routes: Iterable[tuple[str, str]] = ROUTES) -> None:
        self.routes = tuple(routes)
        self._by_segment = {prefix.strip("/"): service for prefix, service in self.routes}

    def resolve(self, path: str) -> str | None:
        end = path.find("/", 1)
        segment = path[1:] if end == -1 else path[1:end]
        return self._by_segment.get(segment)

    @property
    def prefixes(self) -> list[str]:
        return [prefix for prefix, _ in self.routes]

    @property
    def services(self) -> list[str]:
        return list(dict.fromkeys(service for _, service in self.routes))
