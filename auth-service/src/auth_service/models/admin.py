"""Schemas of admin-only routes: signing keys."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class SigningKeyOut(BaseModel):
    kid: str
    alg: str
    state: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    published_until: datetime | None


class SigningKeyList(BaseModel):
    keys: list[SigningKeyOut]


class RotationOut(BaseModel):
    current_kid: str
    retired_kid: str | None
    next_kid: str
