"""test-only: changes data and files, then fails midway

Revision ID: 0099
Revises: 0010
"""

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("upgrade_scratch", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("UPDATE users SET role = 'viewer'")
    op.execute("DELETE FROM jobs")
    # a migration that rewrites files too: the rollback must bring them back
    home = Path(os.environ["SCTK_HOME"])
    for path in sorted((home / "data").rglob("*.parquet")):
        path.write_bytes(b"half-converted")
    raise RuntimeError("the conversion of the data files failed midway")


def downgrade() -> None:
    op.drop_table("upgrade_scratch")
