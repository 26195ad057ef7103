"""Alembic migrations: they build the schema the models describe, and re-running is a no-op."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from auth_service.db.engine import create_engine
from auth_service.db.migrate import apply_migrations
from auth_service.db.tables import Base


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_match_the_models_and_rerun_cleanly(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/nested/dir/auth.db")
    try:
        await apply_migrations(engine)
        await apply_migrations(engine)  # already at head: nothing to do
        async with engine.connect() as connection:
            tables = await connection.run_sync(_tables)
            diff = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "auth.db").is_file()
    assert {"users", "sessions", "refresh_tokens", "api_keys", "signing_keys"} <= tables
    assert "alembic_version" in tables
    assert diff == [], f"models and migrations differ; write a migration: {diff}"
