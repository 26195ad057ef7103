"""The public route contract: which path prefix belongs to which service, which paths need
no credential, and the default request limits at the edge.

One definition for everything that fronts the services: the gateway's route table and
access rules, and the Traefik configuration generated for operators who put Traefik in
front (``switchboard-dev traefik-config``), so the two front doors cannot drift apart.
Prefixes match on segment boundaries (``/auth`` serves ``/auth/token``, not ``/authority``)
and paths are forwarded unchanged.
"""

from __future__ import annotations

ROUTES: tuple[tuple[str, str], ...] = (
    ("/auth", "auth"),
    ("/inference", "inference"),
    ("/code", "inference"),
    ("/v1", "inference"),
    ("/api", "inference"),
    ("/knowledge", "knowledge"),
    ("/memory", "memory"),
)

#: Reachable without a credential (operators may add more: GATEWAY_PUBLIC_PATHS).
PUBLIC_PATHS = frozenset(
    {
        "/auth/register",
        "/auth/token",
        "/auth/refresh",
        "/auth/.well-known/jwks.json",
    }
)

#: Per-tier request limits per principal and service (GATEWAY_RATE_LIMITS' default).
DEFAULT_RATE_LIMITS = "default=120/minute,free=120/minute,pro=1200/minute"
#: Per client IP on public routes (GATEWAY_ANONYMOUS_RATE_LIMIT's default).
DEFAULT_ANONYMOUS_RATE_LIMIT = "60/minute"
