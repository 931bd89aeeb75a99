"""Safety snapshots are their own kind: `--latest` means the newest regular backup, a rerun of
an interrupted restore settles the snapshot it was restoring, and prune keeps them apart."""

from __future__ import annotations

import json

import pytest

from sctk import crashpoints
from sctk.backup import create, kinds
from sctk.backup.location import init_repo, open_repo
from sctk.backup.prune_run import prune_backups
from sctk.backup.restore_run import WORK_DIR, restore
from sctk.errors import Conflict
from tests.backup.backup_support import ENV, set_passphrase
from tests.backup.test_restore import write_data
from tests.helpers import run_sctk

VICTIM = "data/raw/f0.bin"
# which snapshot is chosen does not depend on the database; the restores themselves are
# covered on both backends in test_restore.py
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def backed_up(settings, home, monkeypatch, runtime):
    """A data directory with one regular backup holding VICTIM."""
    set_passphrase(monkeypatch)
    write_data(home)
    repo = init_repo(settings)
    info = create.take(runtime, repo, "daily")
    return repo, info, (home / VICTIM).read_bytes()


def _restore_latest_data(home) -> dict:
    done = run_sctk("restore", "--latest", "--only", "data", "--json", home=home, env=ENV)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@sqlite_only
def test_two_restores_in_a_row_both_bring_the_file_back(settings, home, backed_up):
    repo, info, content = backed_up
    (home / VICTIM).unlink()
    first = _restore_latest_data(home)
    assert first["snapshot"] == info.id and (home / VICTIM).read_bytes() == content
    (home / VICTIM).unlink()
    # the first restore's safety snapshot (without the file) is now the newest snapshot
    second = _restore_latest_data(home)
    assert second["snapshot"] == info.id, "--latest picked a safety snapshot"
    assert (home / VICTIM).read_bytes() == content

    listed = run_sctk("backup", "list", "--json", home=home, env=ENV)
    assert listed.returncode == 0, listed.stderr
    shown = {s["id"]: s for s in json.loads(listed.stdout)}
    assert shown[info.id]["kind"] == "regular"
    safety = [s for s in shown.values() if s["kind"] == "safety"]
    assert {s["id"] for s in safety} == {first["safety_snapshot"], second["safety_snapshot"]}
    assert all(s["label"] == "pre-update" for s in safety)
    text = run_sctk("backup", "list", home=home, env=ENV)
    assert "safety" in text.stdout and "regular" in text.stdout

    # doctor's fix for a missing file, and its opt-in to safety snapshots
    (home / VICTIM).unlink()
    fixed = run_sctk(
        "restore",
        "--latest",
        "--file",
        VICTIM,
        "--target",
        str(home / "data/raw"),
        home=home,
        env=ENV,
    )
    assert fixed.returncode == 0, fixed.stderr
    assert (home / VICTIM).read_bytes() == content
    unsafe = run_sctk(
        "restore",
        "--latest",
        "--include-safety",
        "--file",
        VICTIM,
        "--target",
        str(home / "tmp"),
        home=home,
        env=ENV,
    )
    assert unsafe.returncode != 0 and VICTIM in unsafe.stderr  # not in the safety snapshot


@sqlite_only
def test_only_safety_snapshots_is_one_sentence(settings, home, monkeypatch, runtime):
    set_passphrase(monkeypatch)
    write_data(home)
    repo = init_repo(settings)
    create.take(runtime, repo, "pre-update")
    with pytest.raises(Exception) as caught:
        kinds.latest(repo)
    assert "only safety snapshots" in str(caught.value) and "--include-safety" in str(caught.value)
    assert kinds.latest(repo, include_safety=True).label == "pre-update"


def test_prune_after_restores_keeps_the_regular_backup(settings, home, backed_up, runtime):
    repo, info, _ = backed_up
    safety = []
    for _ in range(4):
        (home / VICTIM).unlink()
        safety.append(restore(runtime, repo, "latest", ["data"]).safety_snapshot)
    assert [s.id for s in open_repo(settings).snapshots()] == [info.id, *safety]

    report = prune_backups(
        runtime,
        keep_last=1,
        keep_daily=0,
        keep_weekly=0,
        keep_monthly=0,
        safety_keep_last=2,
        safety_keep_within_days=0,
    )
    left = [s.id for s in open_repo(settings).snapshots()]
    assert left == [info.id, *safety[-2:]], "prune removed the regular backup"
    assert {r["id"] for r in report["removed"]} == set(safety[:2])
    assert all(r["kind"] == "safety" for r in report["removed"])
    reasons = {k["id"]: k["reason"] for k in report["kept"]}
    assert "last snapshot" in reasons[info.id]
    assert reasons[safety[-1]].startswith("safety snapshot:")

    # the defaults (backup.safety_keep_last 3, 7 days) keep today's safety snapshots
    again = prune_backups(runtime, keep_last=1)
    assert again["removed"] == [] and again["safety_policy"] == {
        "keep_last": 3,
        "keep_within_days": 7.0,
    }


@sqlite_only
def test_a_killed_restore_rerun_with_latest_settles_the_snapshot_it_was_restoring(
    settings, home, backed_up
):
    repo, info, content = backed_up
    (home / VICTIM).unlink()
    killed = run_sctk("restore", "--latest", "--only", "data", home=home, env=_killed_at("staged"))
    assert killed.returncode == -9, killed.stderr
    assert (home / WORK_DIR / "journal.json").exists()
    # the killed run's safety snapshot (without the file) is the newest snapshot now
    assert open_repo(settings).snapshots()[-1].label == "pre-update"

    dry = run_sctk("restore", "--latest", "--dry-run", "--json", home=home, env=ENV)
    planned = json.loads(dry.stdout)
    assert planned["pending_snapshot"] == info.id and planned["snapshot"] == info.id

    rerun = _restore_latest_data(home)
    assert rerun["recovered"] == "rolled back" and rerun["snapshot"] == info.id
    assert (home / VICTIM).read_bytes() == content

    # killed in the middle of the swap: the rerun rolls forward and finishes that snapshot
    (home / VICTIM).unlink()
    killed = run_sctk(
        "restore", "--latest", "--only", "data", home=home, env=_killed_at("swapping")
    )
    assert killed.returncode == -9, killed.stderr
    rerun = _restore_latest_data(home)
    assert rerun["recovered"] == "rolled forward" and rerun["snapshot"] == info.id
    assert rerun["safety_snapshot"], "the killed run's safety snapshot is reported"
    assert (home / VICTIM).read_bytes() == content
    assert not (home / WORK_DIR).exists()


@sqlite_only
def test_a_rerun_naming_another_snapshot_says_which_to_run(settings, home, backed_up, runtime):
    repo, info, content = backed_up
    (home / VICTIM).unlink()
    other = create.take(runtime, repo, "manual")  # without the file
    killed = run_sctk("restore", info.id, "--only", "data", home=home, env=_killed_at("staged"))
    assert killed.returncode == -9
    with pytest.raises(Conflict) as refused:
        restore(runtime, repo, other.id, ["data"])
    message = str(refused.value)
    assert f"interrupted restore of snapshot {info.id[:12]}" in message
    assert "rolled back" in message and f"sctk restore {info.id[:12]}" in message
    assert not (home / VICTIM).exists(), "nothing was restored"
    assert not (home / WORK_DIR).exists()


def _killed_at(step: str) -> dict[str, str]:
    """The environment of a restore that kills itself at STEP (staged, swapping)."""
    return {**ENV, crashpoints.ENV: f"restore.{step}"}
