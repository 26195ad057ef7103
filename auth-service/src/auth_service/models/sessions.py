"""Schemas of the session routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class SessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_agent: str | None
    ip: str | None
    scope: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool = False


class SessionList(BaseModel):
    sessions: list[SessionOut]
