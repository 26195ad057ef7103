"""A caller's queue priority is capped by its own max_priority (an admin override the
gateway signs), else by its tier (from the gateway-signed identity)."""

from __future__ import annotations

import asyncio

import pytest

from inference_service.config import Settings
from inference_service.dependencies import header_priority
from inference_service.services.admission import PriorityRequest, parse_priority_caps
from switchboard_common.identity import Principal


def principal(
    tier: str = "free",
    role: str = "user",
    max_priority: int | None = None,
    priority: int | None = None,
) -> Principal:
    return Principal(
        sub="1",
        username="u",
        scope=["inference"],
        tier=tier,
        role=role,
        max_priority=max_priority,
        priority=priority,
    )


@pytest.mark.parametrize(
    ("tier", "role", "asked", "body", "got"),
    [
        ("free", "user", "9", None, 6),  # default cap
        ("free", "user", "2", None, 2),
        ("free", "user", None, 9, 6),  # the body field is capped too
        ("free", "user", None, None, 5),  # no ask: the default priority
        ("pro", "user", "9", None, 8),
        ("gold", "user", "9", None, 6),  # unlisted tier: the default cap
        ("free", "admin", "9", None, 9),
        ("pro", "user", "banana", None, 5),  # nonsense: the default
    ],
)
def test_priority_is_capped_by_tier(
    tier: str, role: str, asked: str | None, body: int | None, got: int
) -> None:
    request = asyncio.run(header_priority(principal(tier, role), Settings(), asked))
    assert request.resolve(body) == got


def test_caps_are_validated() -> None:
    assert parse_priority_caps("default=3, pro=12") == {"default": 3, "pro": 9}
    with pytest.raises(ValueError, match="tier=number"):
        Settings(priority_caps="pro=high")


def test_uncapped_request_keeps_the_full_range() -> None:
    assert PriorityRequest(requested=9).resolve(None) == 9


@pytest.mark.parametrize(
    ("who", "asked", "body", "got"),
    [
        (principal("free", max_priority=8), "9", None, 8),  # the override replaces the tier cap
        (principal("pro", max_priority=2), "9", None, 2),
        (principal("pro", max_priority=2), None, 9, 2),  # the body field too
        (principal("free", role="admin", max_priority=3), "9", None, 3),
        (principal("free", max_priority=0), None, None, 0),  # the default is capped as well
        (principal("free", priority=2), None, None, 2),  # an API key's priority: the default
        (principal("free", priority=9), None, None, 6),  # …capped by the tier
        (principal("free", priority=2), "4", None, 4),  # …an explicit ask wins
    ],
)
def test_the_principals_own_cap_and_default_win(
    who: Principal, asked: str | None, body: int | None, got: int
) -> None:
    assert asyncio.run(header_priority(who, Settings(), asked)).resolve(body) == got
