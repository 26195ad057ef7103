"""The access policy and credential extraction (unit)."""

from __future__ import annotations

import pytest

from gateway.core.access import AccessPolicy
from gateway.core.security import credential_from


@pytest.mark.parametrize(
    ("service", "path", "public", "blocked", "scope"),
    [
        ("auth", "/auth/token", True, False, None),
        ("auth", "/auth/token/", True, False, None),
        ("auth", "/auth/register", True, False, None),
        ("auth", "/auth/.well-known/jwks.json", True, False, None),
        ("auth", "/auth/me", False, False, None),
        ("auth", "/auth/internal/api-keys/verify", False, True, None),
        ("auth", "/auth/internal", False, True, None),
        ("inference", "/v1/chat/completions", False, False, "inference"),
        ("knowledge", "/knowledge/collections", False, False, "knowledge"),
        ("memory", "/memory/facts", False, False, "memory"),
    ],
)
def test_rules(service: str, path: str, public: bool, blocked: bool, scope: str | None) -> None:
    rule = AccessPolicy().rule(service, path)
    assert (rule.public, rule.blocked, rule.scope) == (public, blocked, scope)


def test_extra_public_paths_and_prefixes() -> None:
    policy = AccessPolicy(("/knowledge/public/*", "/memory/ping"))
    assert policy.rule("knowledge", "/knowledge/public/docs").public
    assert not policy.rule("knowledge", "/knowledge/private").public
    assert policy.rule("memory", "/memory/ping").public
    assert not policy.rule("memory", "/memory/ping/x").public


def scope(
    headers: list[tuple[bytes, bytes]], kind: str = "http", query: bytes = b""
) -> dict[str, object]:
    return {"type": kind, "headers": headers, "query_string": query}


def test_credentials() -> None:
    assert credential_from(scope([(b"authorization", b"Bearer abc")])) == "abc"
    assert credential_from(scope([(b"authorization", b"bearer  abc ")])) == "abc"
    assert credential_from(scope([(b"authorization", b"Basic dXNlcg==")])) is None
    assert credential_from(scope([(b"x-api-key", b"sk-1")])) == "sk-1"
    assert credential_from(scope([], query=b"access_token=t1")) is None  # http: headers only
    assert credential_from(scope([], "websocket", b"a=1&access_token=t1")) == "t1"


def test_websocket_access_token_is_not_forwarded() -> None:
    from gateway.services.ws_proxy import _without_access_token

    assert _without_access_token(b"a=1&b=2") == "a=1&b=2"
    assert _without_access_token(b"a=1&access_token=t&b=2") == "a=1&b=2"
    assert "t1" not in _without_access_token(b"access%5Ftoken=t1&c=3")
