"""Schemas for registration, the current user and admin user management."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchboard_common.limits import MAX_LIMIT_TEXT, normalize_limit_override

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{2,63}$"

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # a sanity check, not RFC 5322

Role = Literal["admin", "user"]

#: A queue priority: 0 (lowest) .. 9 (highest); strict, so ``true`` or ``"5"`` are refused.
Priority = Annotated[int, Field(strict=True, ge=0, le=9)]


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        min_length=3,
        max_length=64,
        pattern=USERNAME_PATTERN,
        description="3–64 of A–Z a–z 0–9 _ . - (case-insensitive; stored lower-case).",
    )
    password: str = Field(min_length=1, max_length=1024)
    email: str | None = Field(default=None, max_length=254, pattern=EMAIL_PATTERN)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    email: str | None
    role: str
    tier: str
    disabled: bool
    created_at: datetime
    rate_limit: str | None = Field(
        default=None, description="Override of the tier's rate limit; null: the tier's."
    )
    max_priority: int | None = Field(
        default=None, description="Override of the tier's highest queue priority; null: the tier's."
    )


class MeResponse(UserOut):
    scope: list[str] = Field(description="Scopes of the credential used for this request.")
    session_id: str | None
    auth: Literal["user", "api_key", "service"]


class UserList(BaseModel):
    users: list[UserOut]
    total: int
    limit: int
    offset: int


class UserUpdate(BaseModel):
    """Admin change to a user; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = None
    role: Role | None = None
    tier: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[a-z0-9_\-]+$")
    # For the two overrides an explicit null means "back to the tier's default", so they
    # are applied when present in the body (model_fields_set), not when non-null.
    rate_limit: str | None = Field(
        default=None,
        max_length=MAX_LIMIT_TEXT,
        description="Rate limit for this user instead of the tier's, e.g. `300/minute`, "
        "`10/s`, `100/30s`, or `unlimited`; null: the tier's. From the user's next token.",
    )
    max_priority: Priority | None = Field(
        default=None,
        description="Highest queue priority (0..9) this user may use instead of the tier's "
        "cap; null: the tier's. From the user's next token.",
    )

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str | None) -> str | None:
        return None if value is None else normalize_limit_override(value)
