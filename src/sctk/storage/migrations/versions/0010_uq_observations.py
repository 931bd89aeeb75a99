"""uq observations and adaptive conformal state

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _model_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["model_id"],
        ["uq_models.id"],
        name=op.f(f"fk_{table}_model_id_uq_models"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "uq_observations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("mean", sa.Float(), nullable=False),
        sa.Column("sigma", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("alpha_used", sa.Float(), nullable=False),
        sa.Column("covered", sa.Boolean(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        _model_fk("uq_observations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uq_observations")),
    )
    # the rolling window reads a model's newest observations: by model, then id
    op.create_index("ix_uq_observations_model_id_id", "uq_observations", ["model_id", "id"])
    op.create_table(
        "uq_adaptive",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("gamma", sa.Float(), nullable=False),
        sa.Column("alpha_t", sa.Float(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _model_fk("uq_adaptive"),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_uq_adaptive")),
    )


def downgrade() -> None:
    op.drop_table("uq_adaptive")
    op.drop_index("ix_uq_observations_model_id_id", table_name="uq_observations")
    op.drop_table("uq_observations")
