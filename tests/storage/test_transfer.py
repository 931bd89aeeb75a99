"""`sctk db migrate-to`: a populated SQLite data directory moved to PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import create_engine, inspect, text

from sctk import config
from sctk.storage.engine import make_engine
from sctk.storage.models import Base
from tests.backup.backup_support import populate
from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar_one()
            for t in Base.metadata.sorted_tables
        }


@sqlite_only
def test_a_populated_directory_moves_to_postgresql_and_keeps_working(settings, pg_url):
    populate(settings)
    before = counts(make_engine(settings))
    r = run_sctk("db", "migrate-to", pg_url, "--json", home=settings.home, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["switched"] and report["files_checked"] >= 2  # a dataset and a model
    assert {k: v for k, v in report["tables"].items()} == before

    moved = config.load(settings.home).settings
    assert moved.db_url.startswith("postgresql")
    after = counts(make_engine(moved))
    assert after["audit_log"] == before["audit_log"] + 1  # the move itself is audited
    assert {k: v for k, v in after.items() if k != "audit_log"} == {
        k: v for k, v in before.items() if k != "audit_log"
    }
    # new rows get new ids: the sequences were moved past the copied ones
    r = run_sctk("jobs", "submit", "noop", "--json", home=settings.home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == before["jobs"] + 1
    assert run_sctk("audit-log", "verify", home=settings.home).returncode == 0


@sqlite_only
def test_a_non_empty_target_is_refused_and_left_alone(settings, pg_url):
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE precious (id int)"))
    r = run_sctk("db", "migrate-to", pg_url, home=settings.home)
    assert r.returncode != 0
    assert "is not empty (it has 1 tables, e.g. precious)" in r.stderr
    with engine.connect() as conn:
        assert inspect(conn).get_table_names() == ["precious"]
    engine.dispose()
    assert config.load(settings.home).settings.db_url.startswith("sqlite")


@sqlite_only
def test_an_unreachable_target_is_one_sentence(settings):
    r = run_sctk("db", "migrate-to", "postgresql://nobody@127.0.0.1:9/none", home=settings.home)
    assert r.returncode != 0 and "\n" not in r.stderr.strip()
    assert config.load(settings.home).settings.db_url.startswith("sqlite")
