"""Schemas of the API key routes, including the gateway's internal verification call."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from auth_service.models.users import Priority
from switchboard_common.identity import ApiKeyIdentity, ApiKeyVerifyRequest

MAX_API_KEY_TTL_S = 5 * 366 * 24 * 3600


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scope: str | None = Field(
        default=None,
        max_length=512,
        description="Space-separated subset of your scopes; default: your scopes except admin.",
    )
    expires_in_s: int | None = Field(
        default=None, ge=1, le=MAX_API_KEY_TTL_S, description="Lifetime; omit for no expiry."
    )
    priority: Priority | None = Field(
        default=None,
        description="Queue priority (0..9) of this key's requests when they send no "
        "X-Priority; omit for your default. Never above what your account may use.",
    )


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    priority: int | None = Field(default=None, description="The key's default priority.")


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret. Shown once; store it now.")


class ApiKeyList(BaseModel):
    api_keys: list[ApiKeyOut]


# The internal verification contract lives in switchboard_common.identity, shared with
# the gateway that calls it.
__all__ = [
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyIdentity",
    "ApiKeyList",
    "ApiKeyOut",
    "ApiKeyVerifyRequest",
]
