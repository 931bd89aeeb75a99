"""test-only: a harmless upgrade that adds a table

Revision ID: 0098
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0098"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("upgrade_extra", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("upgrade_extra")
