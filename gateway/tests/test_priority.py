"""Request priorities computed at the edge, and per-user rate-limit overrides.

Unit level: the computation is pure (no I/O); the real path through a cluster is
tests/test_priorities_e2e.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.core.limits import LimitPolicy
from gateway.core.priority import InvalidPriority, PriorityPolicy, requested_priority
from gateway.core.security import Decision
from gateway.core.token_limits import TokenLimitPolicy
from gateway.models.limits import Limit
from gateway.models.priority import parse_priority_map
from switchboard_common.identity import Principal

POLICY = PriorityPolicy(
    defaults={"default": 5, "free": 3, "pro": 6}, caps={"default": 5, "free": 4, "pro": 7}
)


def who(tier: str = "free", role: str = "user", **extra: object) -> Principal:
    return Principal(sub="u1", username="u", scope=["inference"], tier=tier, role=role, **extra)  # type: ignore[arg-type]


def scope_with(*values: bytes) -> dict[str, object]:
    headers = [(b"host", b"gw")] + [(b"x-priority", v) for v in values]
    return {"type": "http", "path": "/inference/chat", "headers": headers}


@pytest.mark.parametrize(
    ("principal", "asked", "expected"),
    [
        (who("free"), None, 3),  # the tier's default
        (who("free"), 2, 2),
        (who("free"), 9, 4),  # capped by the tier
        (who("pro"), None, 6),
        (who("pro"), 9, 7),
        (who("gold"), None, 5),  # unlisted tier: the default entries
        (who("gold"), 9, 5),
        (who("free", role="admin"), 9, 9),  # admins may use everything
        (who("free", role="admin"), None, 3),  # …but are not raised by default
        (who("free", max_priority=8), 9, 8),  # the admin-set override replaces the tier cap
        (who("pro", max_priority=1), None, 1),  # a lowered cap lowers the default too
        (who("free", role="admin", max_priority=2), 9, 2),  # an explicit override wins
        (who("free", priority=2, kind="api_key"), None, 2),  # the API key's priority
        (who("free", priority=2, kind="api_key"), 4, 4),  # …which a header overrides
        (who("free", priority=9, kind="api_key"), None, 4),  # …capped like any ask
        (who("free", priority=0, kind="api_key"), None, 0),
    ],
)
def test_effective_priority(principal: Principal, asked: int | None, expected: int) -> None:
    assert POLICY.effective(principal, asked) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [((), None), ((b"7",), 7), ((b" 0 ",), 0), ((b"9\t",), 9), ((b"",), None), ((b"3", b"3"), 3)],
)
def test_valid_x_priority(values: tuple[bytes, ...], expected: int | None) -> None:
    assert requested_priority(scope_with(*values)) == expected


@pytest.mark.parametrize(
    "values",
    [
        (b"banana",),
        (b"10",),
        (b"-1",),
        (b"-0",),
        (b"+5",),
        (b"5.0",),
        (b"1e309",),
        (b"9" * 5000,),
        ("٣".encode(),),  # an Arabic-Indic three: int() would take it
        ("５".encode(),),  # a fullwidth five
        (b"\xff\xfe",),
        (b"1_0",),
        (b"2", b"7"),  # two different asks
    ],
)
def test_malformed_x_priority_is_refused_with_the_range(values: tuple[bytes, ...]) -> None:
    with pytest.raises(InvalidPriority, match="0 \\(lowest\\) to 9 \\(highest\\)"):
        requested_priority(scope_with(*values))
    decision = POLICY.apply(scope_with(*values), "inference", Decision(principal=who()))
    assert decision.status == 400
    assert decision.extensions == {"allowed_min": 0, "allowed_max": 9}
    assert decision.identity == []


def test_apply_forwards_the_priority_without_touching_the_cached_identity() -> None:
    identity = [(b"x-switchboard-identity", b"v"), (b"x-switchboard-signature", b"s")]
    decision = Decision(identity=identity, principal=who("free"))
    out = POLICY.apply(scope_with(b"9"), "inference", decision)
    assert out.status == 0
    assert out.identity == [*identity, (b"x-priority", b"4")]
    assert len(identity) == 2  # the credential cache's list is shared between requests


def test_apply_leaves_other_services_and_public_routes_alone() -> None:
    decision = Decision(identity=[], principal=who())
    assert POLICY.apply(scope_with(b"banana"), "memory", decision) is decision
    public = Decision()
    assert POLICY.apply(scope_with(b"banana"), "inference", public) is public


def test_priority_settings_are_validated() -> None:
    assert parse_priority_map(" default=5, pro=7 ") == {"default": 5, "pro": 7}
    for bad in ("pro=10", "pro=-1", "pro=high", "=5", "pro", "pro=٣"):
        with pytest.raises(ValueError, match="tier=priority"):
            parse_priority_map(bad)
    with pytest.raises(ValidationError):
        Settings(priority_caps="pro=12")
    policy = PriorityPolicy.from_settings(
        Settings(priority_defaults="free=2", priority_caps="free=3")
    )
    assert policy.effective(who("free"), None) == 2
    assert policy.effective(who("other"), None) == 5  # no entries: 5, capped at 9
    assert policy.effective(who("other"), 9) == 9


def test_rate_limit_override_replaces_the_tier_limit() -> None:
    policy = LimitPolicy(Settings(rate_limits="default=100/minute,pro=1000/minute"))
    scope = {"type": "http", "client": ("127.0.0.1", 1)}
    assert policy.for_request(scope, "inference", who("free")) == ("u:u1:inference", Limit(100, 60))
    assert policy.for_request(scope, "inference", who("free", rate_limit="3/minute")) == (
        "u:u1:inference",
        Limit(3, 60),
    )
    assert policy.for_request(scope, "memory", who("pro", rate_limit="10/30s")) == (
        "u:u1:memory",
        Limit(10, 30),
    )
    assert policy.for_request(scope, "inference", who("free", rate_limit="unlimited")) is None
    # an override that does not parse never lifts the limit
    assert policy.for_request(scope, "inference", who("free", rate_limit="lots")) == (
        "u:u1:inference",
        Limit(100, 60),
    )
    # admins are not limited, whatever their override says
    admin = who("free", role="admin", rate_limit="1/minute")
    assert policy.for_request(scope, "inference", admin) is None


def test_a_tier_listed_as_unlimited_is_not_the_default() -> None:
    """``pro=0`` makes pro unlimited; it must not fall back to ``default`` like an unlisted
    tier (which is what happened when unlimited entries were dropped while parsing)."""
    policy = LimitPolicy(Settings(rate_limits="default=100/minute,pro=0"))
    scope = {"type": "http", "client": ("127.0.0.1", 1)}
    assert policy.for_request(scope, "inference", who("pro")) is None
    assert policy.for_request(scope, "inference", who("team")) == (
        "u:u1:inference",
        Limit(100, 60),
    )
    tokens = TokenLimitPolicy(Settings(token_limits="default=1000/minute,pro=none"))
    chat = {"type": "http", "method": "POST", "path": "/inference/chat", "headers": []}
    assert tokens.for_request(chat, who("pro")) is None
    rule = tokens.for_request(chat, who("free"))
    assert rule is not None and rule.limit == Limit(1000, 60)
