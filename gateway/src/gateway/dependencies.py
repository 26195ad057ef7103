"""Named dependencies for the gateway's own routes."""

from typing import Annotated

from fastapi import Depends, Request

from gateway.config import Settings
from gateway.services.upstreams import UpstreamPool


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_upstreams(request: Request) -> UpstreamPool:
    pool: UpstreamPool = request.app.state.upstreams
    return pool


SettingsDep = Annotated[Settings, Depends(get_settings)]
UpstreamsDep = Annotated[UpstreamPool, Depends(get_upstreams)]
