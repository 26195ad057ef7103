"""Which rate limit applies to a request, and under which key.

- an authenticated caller: its own limit when an admin set one (``rate_limit`` in the
  token or API-key answer: ``300/minute``, or ``unlimited``), else its tier's limit
  (``GATEWAY_RATE_LIMITS``, e.g. ``free=120/minute,pro=1200/minute``; a tier without an
  entry gets the ``default`` entry), counted per principal (user id, or API key id for
  keys) and per service;
- a public route (no caller): ``GATEWAY_ANONYMOUS_RATE_LIMIT`` per client IP and service;
- admins and the gateway's own routes (health, docs, metrics) are not limited.

An override that does not parse (auth validates it, so only a hand-made or future token
could carry one) falls back to the tier's limit: a bad claim must not lift the limit.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from starlette.types import Scope

from gateway.config import Settings
from gateway.models.limits import Limit, limit_for, parse_limit_override, parse_limits
from switchboard_common.identity import Principal

logger = logging.getLogger("switchboard.gateway.limits")

_INVALID = Limit(-1, 0.0)  # sentinel of an override that did not parse


@lru_cache(maxsize=1024)  # few distinct overrides; parsing once keeps the hot path cheap
def _override(text: str) -> Limit | None:
    try:
        return parse_limit_override(text)
    except ValueError:
        logger.warning("ignoring an unparseable rate-limit override %r", text[:40])
        return _INVALID


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
        limit = self.limit_of(principal)
        if limit is None:
            return None
        who = f"k:{principal.api_key_id}" if principal.api_key_id else f"u:{principal.sub}"
        return f"{who}:{service}", limit

    def limit_of(self, principal: Principal) -> Limit | None:
        """The caller's limit: its override, else its tier's; None means unlimited."""
        if principal.rate_limit is not None:
            override = _override(principal.rate_limit)
            if override is not _INVALID:
                return override
        return limit_for(self.tiers, principal.tier)
