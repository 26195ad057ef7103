"""Anything no service and no gateway route serves: a 404 problem naming the prefixes."""

from fastapi import APIRouter, Request

from gateway.core.route_table import ROUTES
from switchboard_common import NotFound

router = APIRouter()
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.api_route("/{path:path}", methods=ALL_METHODS, include_in_schema=False)
async def unknown_route(request: Request) -> None:
    prefixes = [prefix for prefix, _ in ROUTES]
    raise NotFound(
        f"No service serves {request.url.path}. Public prefixes: {', '.join(prefixes)}; "
        "gateway routes: /health, /ready, /metrics, /docs, /openapi.json.",
        known_prefixes=prefixes,
    )
