"""Scopes: what a role allows, and what a request is granted."""

from __future__ import annotations

import pytest

from auth_service.core.scopes import (
    InvalidScope,
    allowed_scopes,
    grant_scopes,
    narrow_scopes,
    parse_scope,
)

DEFAULT = frozenset({"inference", "knowledge", "memory"})


def test_role_user_gets_defaults_and_admin_gets_admin_too() -> None:
    assert allowed_scopes("user", DEFAULT) == DEFAULT
    assert allowed_scopes("admin", DEFAULT) == DEFAULT | {"admin"}


def test_no_request_grants_everything_allowed() -> None:
    assert grant_scopes(None, DEFAULT) == "inference knowledge memory"
    assert grant_scopes("  ", DEFAULT) == "inference knowledge memory"


def test_request_for_a_subset_gets_exactly_that() -> None:
    assert grant_scopes("memory inference memory", DEFAULT) == "inference memory"


def test_request_outside_the_allowed_set_is_invalid_scope() -> None:
    with pytest.raises(InvalidScope) as info:
        grant_scopes("inference admin", DEFAULT)
    assert info.value.scopes == ["admin"]


@pytest.mark.parametrize("bad", ['inf"erence', "in\\ference", "x" * 65])
def test_malformed_scope_tokens_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(bad)


def test_too_many_scopes_are_rejected() -> None:
    with pytest.raises(InvalidScope):
        parse_scope(" ".join(f"s{i}" for i in range(40)))


def test_narrowing_drops_scopes_no_longer_allowed() -> None:
    assert narrow_scopes("admin inference memory", DEFAULT) == "inference memory"
