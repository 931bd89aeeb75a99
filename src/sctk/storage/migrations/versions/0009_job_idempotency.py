"""job idempotency keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("idempotency_key", sa.String(length=128), nullable=True))
    # a unique index rather than a constraint: SQLite can add one without rebuilding the table
    op.create_index(
        "uq_jobs_owner_idempotency_key", "jobs", ["owner", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_owner_idempotency_key", table_name="jobs")
    op.drop_column("jobs", "idempotency_key")
