"""test-only: an upgrade that cannot be downgraded (a major one)

Revision ID: 0097
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0097"
down_revision = "0010"
branch_labels = None
depends_on = None
IRREVERSIBLE = True  # sctk upgrade asks the operator to confirm the checklist


def upgrade() -> None:
    op.create_table("upgrade_major", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    raise NotImplementedError("this upgrade cannot be undone; restore the pre-update backup")
