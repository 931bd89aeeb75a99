"""kill -9 at each step of `upgrade`, `keys rotate` and inline training, driven from the step
itself (SCTK_CRASH_AT names it; the process SIGKILLs itself there): the home is consistent
afterwards and the rerun completes."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from sctk import crashpoints
from sctk.backup.location import init_repo
from sctk.ops import integrity
from sctk.ops import upgrade as up
from sctk.runtime import Runtime
from sctk.security import rotation
from sctk.security.keyring import Keyring
from sctk.storage import migrate
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import UqModel
from sctk.uq.jobs import train
from tests.backup.backup_support import ENV, populate
from tests.helpers import run_sctk
from tests.ops.test_upgrade import events, files, tables
from tests.security.conftest import sqlite_only
from tests.security.test_keyring import _audit_events, _decrypt_all, _key_ids, _store, _values
from tests.uq.registry_helpers import TINY, import_csv

HERE = Path(__file__).parent
KILLED = -signal.SIGKILL


def crash(step: str, *args: str, home: Path, env: dict[str, str] | None = None) -> None:
    """Run `sctk ARGS` until it reaches STEP, where it is killed with SIGKILL."""
    r = run_sctk(*args, home=home, env={**(env or {}), crashpoints.ENV: step}, timeout=300)
    assert r.returncode == KILLED, f"{step} was not reached: {r.returncode}\n{r.stderr[-2000:]}"


def revision(settings) -> str | None:
    engine = make_engine(settings)
    try:
        return migrate.current(engine)
    finally:
        engine.dispose()


# --- upgrade ----------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    "step",
    ["upgrade.backed-up", "upgrade.config-migrated", "upgrade.migrated", "upgrade.validated"],
)
def test_an_upgrade_killed_at_each_step_is_finished_by_the_rerun(settings, monkeypatch, step):
    env = {**ENV, migrate.EXTRA_MIGRATIONS_ENV: str(HERE / "good_migrations")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    populate(settings)
    init_repo(settings)
    crash(step, "upgrade", "--yes", home=settings.home, env=env)

    # consistent: the database at the old or the new revision, the journal naming the way back
    assert revision(settings) in ("0010", "0098")
    assert (settings.home / up.JOURNAL).exists()

    result = up.upgrade(Runtime(settings), actor="tests")
    assert result.ok and result.after == "0098", result.message
    assert revision(settings) == "0098" and "upgrade_extra" in tables(settings)
    assert not (settings.home / up.JOURNAL).exists()
    assert ("upgrade.attempt", "ok") in events(settings)


@sqlite_only
def test_an_upgrade_killed_while_rolling_back_is_rolled_back_by_the_rerun(settings, monkeypatch):
    env = {**ENV, migrate.EXTRA_MIGRATIONS_ENV: str(HERE / "failing_migrations")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    populate(settings)
    init_repo(settings)
    before_tables, before_files = tables(settings), files(settings.home)
    crash("upgrade.rolling-back", "upgrade", "--yes", home=settings.home, env=env)
    assert (settings.home / up.JOURNAL).exists()

    result = up.upgrade(Runtime(settings), actor="tests")
    assert not result.ok and result.rolled_back and result.after == "0010"
    assert revision(settings) == "0010"
    after = tables(settings)
    assert set(after) == set(before_tables)
    assert {n: after[n] for n in before_tables} == before_tables
    assert files(settings.home) == before_files
    assert not (settings.home / up.JOURNAL).exists()


# --- keys rotate ------------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("step", ["keys.begun", "keys.reencrypted", "keys.audited"])
def test_a_rotation_killed_at_each_step_is_finished_by_the_rerun(settings, step):
    values = _values()
    _store(settings, values)
    crash(step, "keys", "rotate", home=settings.home)

    assert _decrypt_all(settings) == values  # every value still decrypts with the ring on disk
    report = rotation.rotate(Runtime(settings), actor="tests")
    assert report.resumed and report.new_key_id == 2
    assert _decrypt_all(settings) == values
    assert set(_key_ids(settings)) == {2}
    assert [k.id for k in Keyring.load(settings.home).keys] == [2]  # no third key
    assert Keyring.load(settings.home).rotation is None
    assert "key.rotated" in [e.event for e in _audit_events(settings)]


# --- inline training --------------------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize("step", ["train.fitted", "model.written", "model.placed"])
def test_inline_training_killed_at_each_step_leaves_no_half_model_and_reruns(
    settings, engine, tmp_path, step
):
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, 80)
    import_csv(settings, pd.DataFrame({"a": a, "y": np.sin(a)}), "runs")
    config = tmp_path / "model.toml"
    config.write_text("\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in TINY.items()))
    argv = ["uq", "train", "--data", "runs", "--target", "y", "--name", "m", "--inline"]
    crash(step, *argv, "--config", str(config), home=settings.home)

    with session_scope(engine) as s:
        assert s.scalars(select(UqModel)).all() == []  # no row: the commit never happened
        assert integrity.check_files(s, settings.home).ok
    params = {"dataset": "runs", "target": "y", "name": "m", "config": dict(TINY)}
    with session_scope(engine) as s:
        made = train(s, settings.home, params)["model"]
    assert made["version"] == 1
    with session_scope(engine) as s:
        assert integrity.check_files(s, settings.home).ok
        (row,) = s.scalars(select(UqModel)).all()
        assert (settings.home / row.path).is_file()
