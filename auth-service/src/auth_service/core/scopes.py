"""Scopes: what a role may have, and what a token or API key request is granted.

A user has the configured default scopes (``inference knowledge memory``) plus ``admin``
when their role is admin. A request for ``scope=`` gets exactly what it asked for when all
of it is allowed; asking for a scope the user may not have is an ``invalid_scope`` error
(RFC 6749 §5.2), not a silent drop. No request (or an empty one) grants everything allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from auth_service.config import ADMIN_SCOPE

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
MAX_SCOPES = 32


class InvalidScope(ValueError):
    """Requested scopes are malformed or not allowed; ``scopes`` names the offenders."""

    def __init__(self, message: str, scopes: list[str]) -> None:
        super().__init__(message)
        self.scopes = scopes


def allowed_scopes(role: str, default_scopes: Iterable[str]) -> frozenset[str]:
    scopes = set(default_scopes)
    if role == "admin":
        scopes.add(ADMIN_SCOPE)
    return frozenset(scopes)


def format_scope(scopes: Iterable[str]) -> str:
    return " ".join(sorted(set(scopes)))


def parse_scope(scope: str | None) -> list[str]:
    """The tokens of a space-separated scope string; raises :class:`InvalidScope`."""
    tokens = (scope or "").split()
    if len(tokens) > MAX_SCOPES:
        raise InvalidScope(f"at most {MAX_SCOPES} scopes may be requested", [])
    bad = [t for t in tokens if not _SCOPE_TOKEN.match(t)]
    if bad:
        raise InvalidScope("malformed scope", bad[:5])
    return tokens


def grant_scopes(requested: str | None, allowed: frozenset[str]) -> str:
    """The granted scope string: the request when all of it is allowed, else InvalidScope."""
    tokens = parse_scope(requested)
    if not tokens:
        return format_scope(allowed)
    not_allowed = sorted(set(tokens) - allowed)
    if not_allowed:
        raise InvalidScope("scope not allowed for this account", not_allowed)
    return format_scope(tokens)


def narrow_scopes(granted: str, allowed: frozenset[str]) -> str:
    """Previously granted scopes still allowed now (a role may have changed since)."""
    return format_scope(set(granted.split()) & allowed)
