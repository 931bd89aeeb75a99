"""Migrations: they match the models, every step reverses cleanly, bad targets are refused."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from sctk.errors import SctkError
from sctk.storage import migrate
from sctk.storage.engine import make_engine
from sctk.storage.models import Base
from tests.helpers import run_sctk


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def schema(engine) -> dict[str, tuple[list[str], list[str]]]:
    """Every table with its columns and its index names (alembic_version left out)."""
    insp = inspect(engine)
    return {
        table: (
            sorted(c["name"] for c in insp.get_columns(table)),
            sorted(i["name"] for i in insp.get_indexes(table)),
        )
        for table in insp.get_table_names()
        if table != "alembic_version"
    }


def test_models_and_migrations_agree(engine):
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    assert set(schema(engine)) == set(Base.metadata.tables)


def test_history_is_one_linear_chain():
    revisions = migrate.history()  # newest first
    assert revisions, "no migrations found"
    assert revisions[0].is_head and revisions[0].revision == migrate.head()
    assert [r.is_head for r in revisions[1:]] == [False] * (len(revisions) - 1)
    assert revisions[-1].down_revision is None
    for newer, older in zip(revisions, revisions[1:], strict=False):
        assert newer.down_revision == older.revision
    assert all(r.message for r in revisions), "every migration says what it does"


def test_every_migration_downgrades_and_upgrades_again(engine):
    assert migrate.downgrade(engine, "base") == (migrate.head(), None)
    assert migrate.current(engine) is None
    assert schema(engine) == {}

    shapes: dict[str | None, dict] = {None: {}}
    for rev in reversed(migrate.history()):  # oldest first
        before, after = migrate.upgrade(engine, rev.revision)
        assert (before, after) == (rev.down_revision, rev.revision)
        shapes[rev.revision] = schema(engine)
        assert shapes[rev.revision] != shapes[rev.down_revision], (
            f"migration {rev.revision} changed nothing"
        )

        down_to = rev.down_revision or "base"
        assert migrate.downgrade(engine, down_to) == (rev.revision, rev.down_revision)
        assert schema(engine) == shapes[rev.down_revision], f"downgrade of {rev.revision}"

        assert migrate.upgrade(engine, rev.revision) == (rev.down_revision, rev.revision)
        assert schema(engine) == shapes[rev.revision], f"re-upgrade of {rev.revision}"

    assert migrate.current(engine) == migrate.head()
    assert set(schema(engine)) == set(Base.metadata.tables)


def test_upgrade_at_head_changes_nothing_and_unknown_revisions_are_refused(engine):
    head = migrate.head()
    assert migrate.upgrade(engine) == (head, head)

    with pytest.raises(SctkError) as info:
        migrate.downgrade(engine, "nope")
    assert "'nope'" in info.value.message
    assert "sctk db history" in info.value.message
    assert migrate.current(engine) == head

    with pytest.raises(SctkError) as info:
        migrate.upgrade(engine, "deadbeef")
    assert "'deadbeef'" in info.value.message
    assert migrate.current(engine) == head


def run_parallel(*calls: tuple[tuple[str, ...], dict]) -> list[subprocess.CompletedProcess[str]]:
    """run_sctk for each (args, kwargs), side by side: each costs about a second of imports."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_sctk, *args, **kwargs) for args, kwargs in calls]
        return [f.result() for f in futures]


def test_cli_db_commands(home, engine):
    head = migrate.head()
    # none of these changes the schema, so they may run side by side
    refused, current, upgraded = run_parallel(
        (("db", "downgrade", "nope"), {"home": home}),
        (("db", "current", "--json"), {"home": home}),
        (("db", "upgrade"), {"home": home}),
    )

    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr + refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "'nope'" in lines[0]

    assert current.returncode == 0, current.stderr
    assert json.loads(current.stdout) == {"current": head, "head": head, "at_head": True}

    assert upgraded.returncode == 0, upgraded.stderr
    assert f"already at {head}; nothing changed" in upgraded.stdout

    assert migrate.current(engine) == head


def test_cli_db_history_json():
    result = run_sctk("db", "history", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed == [
        {
            "revision": r.revision,
            "down_revision": r.down_revision,
            "message": r.message,
            "is_head": r.is_head,
        }
        for r in migrate.history()
    ]
    assert listed[0]["is_head"] is True


def test_head_follows_a_migration_added_while_running(tmp_path, monkeypatch):
    base = migrate.head()
    assert migrate.head() == base  # answered from memory the second time
    extra = tmp_path / "versions"
    extra.mkdir()
    monkeypatch.setenv(migrate.EXTRA_MIGRATIONS_ENV, str(extra))
    assert migrate.head() == base  # an empty extra directory changes nothing
    (extra / "zz_extra.py").write_text(
        f'revision = "zz_extra"\ndown_revision = "{base}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    assert migrate.head() == "zz_extra"
    monkeypatch.delenv(migrate.EXTRA_MIGRATIONS_ENV)
    assert migrate.head() == base
