"""Alembic migrations of the auth schema (run at start by ``auth_service.db.migrate``)."""
