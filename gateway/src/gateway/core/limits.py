"""Which rate limit applies to a request, and under which key.

- an authenticated caller: its tier's limit (``GATEWAY_RATE_LIMITS``, e.g.
  ``free=120/minute,pro=1200/minute``; a tier without an entry gets the ``default`` entry),
  counted per principal (user id, or API key id for keys) and per service;
- a public route (no caller): ``GATEWAY_ANONYMOUS_RATE_LIMIT`` per client IP and service;
- admins and the gateway's own routes (health, docs, metrics) are not limited.
"""

from __future__ import annotations

from starlette.types import Scope

from gateway.config import Settings
from gateway.models.limits import Limit, parse_limits
from switchboard_common.identity import Principal


class LimitPolicy:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self.tiers = parse_limits(settings.rate_limits)
        self.anonymous = (
            Limit.parse(settings.anonymous_rate_limit)
            if settings.anonymous_rate_limit.strip().lower() not in ("", "0", "none")
            else None
        )

    def for_request(
        self, scope: Scope, service: str, principal: Principal | None
    ) -> tuple[str, Limit] | None:
        if not self.enabled:
            return None
        if principal is None:
            if self.anonymous is None:
                return None
            client = scope.get("client")
            return f"ip:{client[0] if client else 'unknown'}:{service}", self.anonymous
        if principal.role == "admin":
            return None
        limit = self.tiers.get(principal.tier) or self.tiers.get("default")
        if limit is None:
            return None
        who = f"k:{principal.api_key_id}" if principal.api_key_id else f"u:{principal.sub}"
        return f"{who}:{service}", limit
