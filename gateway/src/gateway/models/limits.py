"""A rate limit as configured: a count per window (``60/minute``, ``10/s``, ``100/30s``).

The grammar is shared with the auth service (which validates per-user overrides), so it
lives in ``switchboard_common.limits``; the gateway keeps importing it from here.
"""

from __future__ import annotations

from switchboard_common.limits import Limit, limit_for, parse_limit_override, parse_limits

__all__ = ["Limit", "limit_for", "parse_limit_override", "parse_limits"]
