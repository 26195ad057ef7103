"""Persistence of the auth service: SQLAlchemy 2 async models, engine, migrations, stores.

``tables`` holds the ORM models, ``engine`` the engine/session factory, ``migrate`` applies
the Alembic migrations in ``migrations/`` (shipped inside the package), and ``stores/`` the
repositories the services use. SQLite by default, PostgreSQL through ``AUTH_DATABASE_URL``.
"""
