"""`init_home`: the data directory's layout, its permissions, and that it is idempotent."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sctk import config
from sctk.errors import DatabaseUnavailable, SctkError
from sctk.ops.init_home import init_home
from sctk.storage import migrate
from sctk.storage.engine import make_engine
from sctk.storage.layout import SUBDIRS, is_data_dir
from tests.helpers import free_port


@pytest.fixture
def db_url(backend, request) -> str | None:
    """These tests watch `init_home` migrate: on PostgreSQL an empty database, not the
    suite's ready-migrated copy (tests/conftest.py)."""
    return None if backend == "sqlite" else request.getfixturevalue("pg_url")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every entry under ROOT: mode, mtime and (for files) content."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.stat()
        content = path.read_bytes() if path.is_file() else None
        out[str(path.relative_to(root))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return out


def test_init_creates_layout_config_and_schema(tmp_path, db_url):
    home = tmp_path / "new" / "home"
    report, settings = init_home(home, database_url=db_url)

    assert report.changed
    assert report.home == home
    assert set(report.created) >= {str(home), *(f"{n}/" for n in SUBDIRS), "sctk.toml"}
    assert report.fixed == []
    assert (report.revision_before, report.revision_after) == (None, migrate.head())
    assert mode(home) == 0o750
    for name, want in SUBDIRS.items():
        assert (home / name).is_dir()
        assert mode(home / name) == want, name
    assert mode(home / "keys") == 0o700
    assert is_data_dir(home)

    toml = home / "sctk.toml"
    assert mode(toml) == 0o600  # it may hold a database password
    text = toml.read_text()
    assert text.startswith("#")
    assert "# port = 8000" in text
    assert config.check_file(toml) == []
    # everything in the template is commented out, except the database this home was made for
    loaded = config.load(home)
    assert loaded.settings == settings
    set_in_file = {k for k, origin in loaded.origins.items() if origin == str(toml)}
    assert set_in_file == ({"database_url"} if db_url else set())

    engine = make_engine(settings)
    try:
        assert migrate.current(engine) == migrate.head()
    finally:
        engine.dispose()
    if db_url is None:
        assert settings.is_sqlite
        assert mode(home / "sctk.db") == 0o600
    else:
        assert not settings.is_sqlite
        assert settings.db_url == db_url
        assert not (home / "sctk.db").exists()


def test_second_init_changes_nothing(home, db_url):
    before = snapshot(home)
    report, _ = init_home(home, database_url=db_url)
    assert not report.changed
    assert report.created == [] and report.fixed == []
    assert report.revision_before == report.revision_after == migrate.head()
    # SQLite's -wal/-shm files come and go with each connection, so the home directory's own
    # mtime may move; every entry inside it (files and subdirectories) must not
    assert snapshot(home) == before


def test_non_empty_foreign_directory_is_refused_without_force(tmp_path, db_url):
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (target / "album").mkdir()
    before = snapshot(target)

    with pytest.raises(SctkError) as info:
        init_home(target, database_url=db_url)
    assert str(target) in info.value.message
    assert "--force" in info.value.message
    assert snapshot(target) == before

    report, _ = init_home(target, database_url=db_url, force=True)
    assert "keys/" in report.created and "sctk.toml" in report.created
    assert is_data_dir(target)
    assert (target / "holiday.jpg").read_bytes() == b"\xff\xd8 not really a jpeg"
    assert (target / "album").is_dir()
    # from now on it is an sctk data directory: no --force needed
    assert not init_home(target, database_url=db_url)[0].changed


def test_file_as_home_is_refused(tmp_path):
    target = tmp_path / "afile"
    target.write_text("hello")
    with pytest.raises(SctkError) as info:
        init_home(target, force=True)
    assert "is a file" in info.value.message
    assert target.read_text() == "hello"


def test_empty_directory_is_accepted(tmp_path):
    target = tmp_path / "empty"
    target.mkdir(mode=0o777)
    report, _ = init_home(target)
    assert str(target) not in report.created
    assert is_data_dir(target)
    assert mode(target) == 0o750


def test_widened_permissions_and_missing_dirs_are_repaired(home, db_url):
    os.chmod(home / "keys", 0o755)
    os.chmod(home / "backups", 0o777)
    os.chmod(home / "data", 0o700)  # narrower than required: left alone
    (home / "tmp").rmdir()
    report, _ = init_home(home, database_url=db_url)
    assert report.changed
    assert report.created == ["tmp/"]
    assert sorted(report.fixed) == [
        "backups/ permissions set to 700",
        "keys/ permissions set to 700",
    ]
    assert mode(home / "keys") == 0o700
    assert mode(home / "backups") == 0o700
    assert mode(home / "data") == 0o700
    assert mode(home / "tmp") == SUBDIRS["tmp"]
    assert not init_home(home, database_url=db_url)[0].changed


def test_unreachable_postgres_creates_nothing(tmp_path):
    port = free_port()
    url = f"postgresql://sctk@127.0.0.1:{port}/sctk"
    new = tmp_path / "new"
    with pytest.raises(DatabaseUnavailable) as info:
        init_home(new, database_url=url)
    assert f"127.0.0.1:{port}" in info.value.message
    assert not new.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatabaseUnavailable):
        init_home(empty, database_url=url)
    assert list(empty.iterdir()) == []


def test_other_database_url_for_existing_home_is_refused(home, db_url):
    before = snapshot(home)
    with pytest.raises(SctkError) as info:
        init_home(home, database_url=f"postgresql://sctk@127.0.0.1:{free_port()}/other")
    assert "--database-url" in info.value.message
    assert snapshot(home) == before
