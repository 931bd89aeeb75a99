"""Alembic environment: sctk always hands over an open connection (see sctk.storage.migrate)."""

from alembic import context

from sctk.storage.models import Base
from sctk.storage.types import UTCDateTime


def render_item(type_, obj, autogen_context):
    # migrations name plain SQLAlchemy types so that they never import sctk's model code
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
