"""Schemas for registration, the current user and admin user management."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{2,63}$"

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # a sanity check, not RFC 5322

Role = Literal["admin", "user"]


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
