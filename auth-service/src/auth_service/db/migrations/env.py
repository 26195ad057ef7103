"""Alembic environment: runs on the connection handed over by ``auth_service.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from auth_service.db.tables import Base

MIGRATION_LOCK_ID = 0x5A17_0001  # pg_advisory_xact_lock key: one migrator at a time


def run_on(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through auth_service.db.migrate (needs a connection)")
run_on(connection)
