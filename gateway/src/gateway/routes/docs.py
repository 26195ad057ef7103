"""``/openapi.json`` and ``/docs``: the merged API of every service, with a working
"Authorize" button (OAuth2 password flow at ``/auth/token``)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, JSONResponse

from gateway.services.openapi_merge import OpenApiAggregator

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    aggregator: OpenApiAggregator = request.app.state.openapi
    document: dict[str, Any] = await aggregator.document()
    return JSONResponse(document)


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Switchboard API",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get("/docs/oauth2-redirect")
async def oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
