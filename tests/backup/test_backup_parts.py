"""The small pieces of the sctk side: snapshot parts, the passphrase, the retention policy
from settings, and how pg_dump is told where the database is."""

from __future__ import annotations

import pytest

from sctk import config
from sctk.backup import manifest, passphrase
from sctk.backup.dbsnapshot import pg_env
from sctk.backup.location import display, repo_url
from sctk.backup.prune_run import policy_from
from sctk.errors import ConfigError, SctkError
from tests.security.conftest import sqlite_only


def test_part_of_maps_every_snapshot_path():
    assert manifest.part_of("sctk.db") == "db"
    assert manifest.part_of("postgres.sql") == "db"
    assert manifest.part_of("sctk.toml") == "config"
    assert manifest.part_of("keys/keyring.json") == "keys"
    for top in ("data", "results", "archive", "reports"):
        assert manifest.part_of(f"{top}/x/y.bin") == "data"
    for never in ("backups/config", "logs/sctk.log", "tmp/x", "other.txt"):
        with pytest.raises(ValueError):
            manifest.part_of(never)
    assert manifest.count_parts(["sctk.db", "keys/a", "data/b", "results/c"]) == {
        "db": 1,
        "config": 0,
        "keys": 1,
        "data": 2,
    }


def test_passphrase_sources(tmp_path, monkeypatch):
    s = config.load(tmp_path).settings
    with pytest.raises(ConfigError, match="SCTK_BACKUP_PASSPHRASE"):
        passphrase.resolve(s)
    key = tmp_path / "pass"
    key.write_text("first line\nsecond\n")
    s = config.load(tmp_path, {"backup": {"passphrase_file": str(key)}}).settings
    assert passphrase.resolve(s) == "first line"
    key.write_text("\n")
    with pytest.raises(ConfigError, match="empty first line"):
        passphrase.resolve(s)
    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", "from env")
    assert passphrase.resolve(s) == "from env"  # the environment wins


def test_repository_location_and_display(tmp_path):
    assert repo_url(config.load(tmp_path).settings) == str(tmp_path / "backups")
    s = config.load(tmp_path, {"backup": {"repository": "sftp://u:pw@host/srv/b"}}).settings
    assert repo_url(s) == "sftp://u:pw@host/srv/b"
    assert display(repo_url(s)) == "sftp://u:***@host/srv/b"


def test_policy_defaults_come_from_settings(tmp_path):
    s = config.load(tmp_path, {"backup": {"keep_last": 3, "keep_monthly": 0}}).settings
    policy = policy_from(s, keep_daily=2)
    assert (policy.keep_last, policy.keep_daily, policy.keep_weekly, policy.keep_monthly) == (
        3,
        2,
        4,
        0,
    )
    with pytest.raises(SctkError, match="negative"):
        policy_from(s, keep_last=-1)


def test_pg_dump_gets_the_password_by_environment_only(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "stale")
    env = pg_env("postgresql://ada:s3cr%40t@db.example.org:5433/prod?sslmode=require")
    assert env["PGHOST"] == "db.example.org" and env["PGPORT"] == "5433"
    assert env["PGUSER"] == "ada" and env["PGDATABASE"] == "prod"
    assert env["PGPASSWORD"] == "s3cr@t" and env["PGSSLMODE"] == "require"
    assert "PGPASSWORD" not in pg_env("postgresql://ada@db/prod"), "no stale password leaks in"


@sqlite_only
def test_a_repository_inside_the_data_directory_does_not_back_itself_up(home, monkeypatch):
    from sctk.backup.create import create_backup
    from sctk.backup.location import init_repo, open_repo
    from sctk.runtime import Runtime

    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", "inside-out-repository-77")
    s = config.load(home, {"backup": {"repository": str(home / "data" / "repo")}}).settings
    (home / "data" / "kept.txt").write_text("kept\n")
    init_repo(s)
    with Runtime(s) as rt:
        create_backup(rt, "manual", actor="tests")
        snap = create_backup(rt, "manual", actor="tests")
    paths = {f.path for f in open_repo(s).files(snap["id"])}
    assert "data/kept.txt" in paths
    assert not any(p.startswith("data/repo") for p in paths), sorted(paths)
