"""Placeholder route under the service's public prefix, so routing is testable."""

from fastapi import APIRouter

from inference_service.dependencies import SettingsDep
from inference_service.models.status import Pong

router = APIRouter(prefix="/inference", tags=["inference"])


@router.get("/ping", response_model=Pong, summary="Answer with the service's name")
async def ping(settings: SettingsDep) -> Pong:
    return Pong(service=settings.service_name, version=settings.version)
