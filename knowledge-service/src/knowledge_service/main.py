"""Assembles the knowledge service app. Logic lives in routes/, services/ and core/."""

from fastapi import FastAPI

from knowledge_service.config import Settings
from knowledge_service.routes import status
from switchboard_common import create_service_app


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or Settings(),
        title="Switchboard knowledge",
        description="Collections, documents, vector search and retrieval-augmented answers.",
        routers=[status.router],
    )
