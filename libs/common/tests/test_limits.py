"""The rate-limit grammar shared by the gateway (enforcing) and auth (validating overrides)."""

from __future__ import annotations

import pytest

from switchboard_common.limits import (
    Limit,
    normalize_limit_override,
    parse_limit_override,
    parse_limits,
)


def test_grammar() -> None:
    assert Limit.parse("60/minute") == Limit(60, 60)
    assert Limit.parse(" 10 / S ") == Limit(10, 1)
    assert Limit.parse("100/30s") == Limit(100, 30)
    assert Limit.parse("5/2h") == Limit(5, 7200)
    assert parse_limits("free=60/minute, pro=0") == {"free": Limit(60, 60), "pro": None}


@pytest.mark.parametrize(
    "text",
    ["sixty/minute", "60/fortnight", "60", "/minute", "-1/minute", "1.5/s", "٣/minute",
     "60/٣s", "1/0s", "99999999999/s", "1/9999999d", "1e309/s", "60/minute/s"],
)  # fmt: skip
def test_bad_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        Limit.parse(text)


def test_override() -> None:
    assert parse_limit_override("300/minute") == Limit(300, 60)
    for unlimited in ("unlimited", "NONE", "0"):
        assert parse_limit_override(unlimited) is None
    with pytest.raises(ValueError, match="allows no request"):
        parse_limit_override("0/minute")
    with pytest.raises(ValueError, match="at most 32"):
        parse_limit_override("1" * 20 + "/" + "minute" * 3)
    assert normalize_limit_override(" 300 / Minute ") == "300/minute"
    assert normalize_limit_override("None") == "unlimited"
