"""Named dependencies for the knowledge service's routes."""

from typing import Annotated

from fastapi import Depends, Request

from knowledge_service.config import Settings


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
