"""monitoring metric aggregates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_aggregates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=200), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("avg", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_aggregates")),
        sa.UniqueConstraint("metric", "bucket_start", name="uq_metric_aggregates_metric_bucket"),
    )
    op.create_index("ix_metric_aggregates_bucket_start", "metric_aggregates", ["bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_metric_aggregates_bucket_start", table_name="metric_aggregates")
    op.drop_table("metric_aggregates")
