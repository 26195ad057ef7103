"""Apply the Alembic migrations shipped in ``migrations/`` (at start, in the lifespan).

PostgreSQL replicas starting together serialise on an advisory lock (taken in env.py), so
a migration runs once. To write a new migration after changing ``tables.py``::

    python -m auth_service.db.migrate revision "add column x"   # autogenerate vs the DB
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def apply_migrations(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (a no-op when it is already there)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def main(argv: list[str]) -> None:  # pragma: no cover - developer tool
    from auth_service.config import Settings
    from auth_service.db.engine import create_engine

    async def run() -> None:
        engine = create_engine(Settings().resolved_database_url)
        await apply_migrations(engine)
        if argv[:1] == ["revision"]:
            message = argv[1] if len(argv) > 1 else "change"
            async with engine.begin() as connection:
                await connection.run_sync(
                    lambda c: command.revision(alembic_config(c), message, autogenerate=True)
                )
        await engine.dispose()

    asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
