"""Per-user rate-limit and priority-cap overrides; per-API-key default priority.

All three columns are nullable (null: the tier's default), so existing rows need no
backfill and an older auth replica still reading the table simply ignores them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as users:
        users.add_column(sa.Column("rate_limit", sa.String(length=32), nullable=True))
        users.add_column(sa.Column("max_priority", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_keys") as api_keys:
        api_keys.add_column(sa.Column("priority", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as api_keys:
        api_keys.drop_column("priority")
    with op.batch_alter_table("users") as users:
        users.drop_column("max_priority")
        users.drop_column("rate_limit")
