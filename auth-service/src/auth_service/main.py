"""Assembles the auth service app. Logic lives in routes/, services/, core/ and db/."""

from fastapi import FastAPI

from auth_service.config import Settings
from auth_service.lifespan import lifespan
from auth_service.routes import admin, api_keys, auth, jwks, sessions, status
from switchboard_common import create_service_app

OPENAPI_TAGS = [
    {"name": "auth", "description": "Register, log in (OAuth2 password flow), refresh."},
    {"name": "sessions", "description": "Your logins; revoke any of them."},
    {"name": "api-keys", "description": "Long-lived keys for programs."},
    {"name": "admin", "description": "Users, roles, tiers and signing keys (admin only)."},
    {"name": "jwks", "description": "Public keys that verify access tokens."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="Switchboard auth",
        description="Users, sessions, tokens, API keys and signing keys.",
        routers=[
            status.router,
            auth.router,
            sessions.router,
            api_keys.router,
            api_keys.internal_router,
            admin.router,
            jwks.router,
        ],
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
    )
