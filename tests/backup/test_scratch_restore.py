"""restore_test: the database of a snapshot loaded into a scratch database (a temporary SQLite
file or a PostgreSQL database created and dropped) and compared with the manifest."""

from __future__ import annotations

import copy

from sqlalchemy import create_engine, text

from sctk.backup import create, dbload
from sctk.backup.location import init_repo
from sctk.backup.scratch_restore import compare, restore_test
from sctk.storage.engine import normalise_url
from tests.backup.backup_support import populate, set_passphrase


def _databases(settings) -> set[str]:
    engine = create_engine(normalise_url(settings.db_url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            # only restore-test scratch databases: other tests create and drop their own
            names = conn.execute(text("SELECT datname FROM pg_database")).scalars()
            return {n for n in names if n.startswith("sctk_restore_test_")}
    finally:
        engine.dispose()


def _tampered(repo, info, manifest):
    """A copy of snapshot INFO whose manifest says something else."""
    with repo.writer() as writer:
        for entry in repo.files(info.id):
            writer.add_stream(entry.path, repo.read_file(info.id, entry.path), mode=entry.mode)
        return writer.commit(info.label, manifest)


def test_restore_test_passes_then_reports_a_disagreeing_manifest(
    settings, home, backend, monkeypatch, runtime
):
    set_passphrase(monkeypatch)
    populate(settings, model=False)
    repo = init_repo(settings)
    info = create.take(runtime, repo, "manual")
    # the scratch databases this test's restore tests make (other tests, on another xdist
    # worker, may make and drop their own meanwhile): named by the real function, recorded
    made: list[str] = []
    real_scratch_url = dbload.scratch_url

    def recorded(*args, **kwargs):
        url = real_scratch_url(*args, **kwargs)
        made.append(dbload.database_name(url))
        return url

    monkeypatch.setattr(dbload, "scratch_url", recorded)

    good = restore_test(settings, repo, info.id)
    assert good["ok"] is True, good["mismatches"]
    assert good["mismatches"] == []
    assert good["tables"]["users"]["actual"] == info.manifest["tables"]["users"] >= 1
    assert good["schema_revision"] == info.manifest["schema_revision"]
    assert good["seconds"] >= 0

    manifest = copy.deepcopy(info.manifest)
    manifest["tables"]["users"] += 1
    manifest["tables"]["ghosts"] = 3
    manifest["schema_revision"] = "0001"
    bad = restore_test(settings, repo, _tampered(repo, info, manifest).id)
    assert bad["ok"] is False
    text_ = " ".join(bad["mismatches"])
    assert "table users has" in text_ and "ghosts" in text_ and "schema revision" in text_
    if not settings.is_sqlite:
        assert len(made) == 2 and all(n.startswith("sctk_restore_test_") for n in made), made
        assert not set(made) & _databases(settings)  # the scratch databases were dropped
    else:
        assert not list((home / "tmp").glob("restore-test-*"))


def test_compare_names_each_disagreement():
    tables, mismatches = compare(
        {"tables": {"a": 1, "b": 2}, "schema_revision": "r2"}, {"a": 1, "c": 0}, "r1"
    )
    assert tables["a"] == {"expected": 1, "actual": 1}
    assert len(mismatches) == 3
    assert any("table b is in the manifest" in m for m in mismatches)
    assert any("table c is in the database" in m for m in mismatches)
