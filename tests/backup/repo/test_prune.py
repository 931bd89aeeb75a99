"""Retention with restic's semantics, garbage collection, repacking, dry run."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sctk.backup.repo import PrunePolicy, RepoError
from tests.backup.repo.conftest import backup, tree_bytes


def _snap_at(repo, root: Path, when: datetime, label: str = "daily"):
    (root / "stamp.txt").write_text(when.isoformat())
    return backup(repo, root, label=label, time=when)


@pytest.fixture
def history(repo, tmp_path):
    """Snapshots at fixed times: 3 on 2026-03-10, one a day 03-01..03-09, one on 02-15,
    01-20, 2025-12-24 (a small tree each)."""
    root = tmp_path / "h"
    root.mkdir()
    (root / "base.bin").write_bytes(os.urandom(10_000))
    times = [datetime(2026, 3, 10, h, tzinfo=UTC) for h in (8, 12, 20)]
    times += [datetime(2026, 3, d, 12, tzinfo=UTC) for d in range(1, 10)]
    times += [
        datetime(2026, 2, 15, tzinfo=UTC),
        datetime(2026, 1, 20, tzinfo=UTC),
        datetime(2025, 12, 24, tzinfo=UTC),
    ]
    snaps = {t: _snap_at(repo, root, t) for t in sorted(times)}
    return snaps


def _kept_times(kept):
    return sorted(s.time for s, _ in kept)


def test_keep_last(repo, history):
    kept, removed = repo.plan_retention(PrunePolicy(keep_last=2))
    assert _kept_times(kept) == [
        datetime(2026, 3, 10, 12, tzinfo=UTC),
        datetime(2026, 3, 10, 20, tzinfo=UTC),
    ]
    assert all(why == "last snapshot" for _, why in kept)
    assert len(removed) == len(history) - 2


def test_keep_daily_takes_newest_of_each_day(repo, history):
    kept, _ = repo.plan_retention(PrunePolicy(keep_daily=3))
    assert _kept_times(kept) == [
        datetime(2026, 3, 8, 12, tzinfo=UTC),
        datetime(2026, 3, 9, 12, tzinfo=UTC),
        datetime(2026, 3, 10, 20, tzinfo=UTC),
    ]


def test_keep_weekly_and_monthly(repo, history):
    kept, _ = repo.plan_retention(PrunePolicy(keep_weekly=2))
    # ISO weeks: 2026-W11 (03-09, 03-10) and W10 (03-02..03-08): newest of each
    assert _kept_times(kept) == [
        datetime(2026, 3, 8, 12, tzinfo=UTC),
        datetime(2026, 3, 10, 20, tzinfo=UTC),
    ]
    kept, _ = repo.plan_retention(PrunePolicy(keep_monthly=4))
    assert _kept_times(kept) == [
        datetime(2025, 12, 24, tzinfo=UTC),
        datetime(2026, 1, 20, tzinfo=UTC),
        datetime(2026, 2, 15, tzinfo=UTC),
        datetime(2026, 3, 10, 20, tzinfo=UTC),
    ]


def test_rules_combine_with_reasons(repo, history):
    kept, removed = repo.plan_retention(PrunePolicy(keep_last=1, keep_daily=2, keep_monthly=2))
    reasons = {s.time: why for s, why in kept}
    newest = datetime(2026, 3, 10, 20, tzinfo=UTC)
    assert reasons[newest] == "last snapshot, daily snapshot, monthly snapshot"
    assert reasons[datetime(2026, 3, 9, 12, tzinfo=UTC)] == "daily snapshot"
    assert reasons[datetime(2026, 2, 15, tzinfo=UTC)] == "monthly snapshot"
    assert len(kept) == 3 and len(removed) == len(history) - 3


def test_keep_within_is_relative_to_newest_snapshot(repo, history):
    kept, _ = repo.plan_retention(PrunePolicy(keep_within_days=2))
    newest = datetime(2026, 3, 10, 20, tzinfo=UTC)
    assert _kept_times(kept) == sorted(t for t in history if t >= newest - timedelta(days=2))


def test_newest_verified_is_always_kept(repo, history):
    verified = history[datetime(2026, 1, 20, tzinfo=UTC)]
    repo.mark_verified(verified.id, {"ok": True})
    kept, _ = repo.plan_retention(PrunePolicy(keep_last=1))
    assert {s.id: why for s, why in kept}[verified.id] == "newest verified snapshot"
    report = repo.prune(PrunePolicy(keep_last=1))
    assert verified.id not in report.removed_snapshots
    assert {s.id for s in repo.snapshots()} == {verified.id, report.kept[0][0]}


def test_bad_policy_values(repo, history):
    with pytest.raises(RepoError, match="keep-daily is -1"):
        repo.plan_retention(PrunePolicy(keep_daily=-1))
    kept, removed = repo.plan_retention(PrunePolicy())
    assert removed == [] and len(kept) == len(history)


def test_dry_run_changes_nothing(repo, history):
    before = {f: dict(repo.backend.list(f)) for f in ("data", "index", "snapshots")}
    report = repo.prune(PrunePolicy(keep_last=1), dry_run=True)
    assert report.dry_run and len(report.removed_snapshots) == len(history) - 1
    assert {f: dict(repo.backend.list(f)) for f in ("data", "index", "snapshots")} == before


def test_prune_collects_garbage_and_keeps_restorable(repo, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "only_a.bin").write_bytes(os.urandom(20_000_000))
    (b / "only_b.bin").write_bytes(os.urandom(2_000_000))
    old = backup(repo, a, time=datetime(2026, 1, 1, tzinfo=UTC))
    new = backup(repo, b, time=datetime(2026, 1, 2, tzinfo=UTC))
    size_before = sum(repo.backend.list("data").values())
    report = repo.prune(PrunePolicy(keep_last=1))
    assert report.removed_snapshots == [old.id]
    assert report.deleted_packs >= 1 and report.freed_bytes >= 19_000_000
    assert sum(repo.backend.list("data").values()) == size_before - report.freed_bytes
    assert repo.check(read_data=True).ok
    repo.restore(new.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(b)
    # nothing left to do the second time
    again = repo.prune(None)
    assert (again.deleted_packs, again.repacked_packs, again.freed_bytes) == (0, 0, 0)


def test_mostly_garbage_pack_is_repacked(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.bin").write_bytes(os.urandom(1_000_000))
    (src / "drop.bin").write_bytes(os.urandom(6_000_000))
    first = backup(repo, src, time=datetime(2026, 1, 1, tzinfo=UTC))  # one pack holds both
    (src / "drop.bin").unlink()
    second = backup(repo, src, time=datetime(2026, 1, 2, tzinfo=UTC))
    assert second.added_bytes == 0  # keep.bin is deduplicated into the first pack
    report = repo.prune(PrunePolicy(keep_last=1))
    assert report.removed_snapshots == [first.id]
    assert report.repacked_packs == 1 and report.deleted_packs == 0
    assert 5_000_000 < report.freed_bytes < 6_100_000
    assert sum(repo.backend.list("data").values()) < 1_100_000
    assert len(repo.backend.list("index")) == 1
    assert repo.check(read_data=True).ok
    assert b"".join(repo.read_file(second.id, "keep.bin")) == (src / "keep.bin").read_bytes()


def test_a_repacked_pack_is_read_a_span_at_a_time(repo, tmp_path):
    """The live chunks of a mostly-garbage pack are read in spans (prune.SPAN), not the pack
    whole: a 14 MB pack held whole was the largest block of a prune's peak memory."""
    import tracemalloc

    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.bin").write_bytes(os.urandom(2_000_000))
    (src / "drop.bin").write_bytes(os.urandom(12_000_000))
    backup(repo, src, time=datetime(2026, 1, 1, tzinfo=UTC))  # one pack of ~14 MB
    assert len(repo.backend.list("data")) == 1
    (src / "drop.bin").unlink()
    second = backup(repo, src, time=datetime(2026, 1, 2, tzinfo=UTC))
    tracemalloc.start()
    try:
        report = repo.prune(PrunePolicy(keep_last=1))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.repacked_packs == 1
    assert peak < 10 * 1024 * 1024, peak  # the whole pack alone is 14 MB
    assert repo.check(read_data=True).ok
    assert b"".join(repo.read_file(second.id, "keep.bin")) == (src / "keep.bin").read_bytes()


def test_the_plan_from_the_merge_is_the_plan_that_scores_every_copy(repo, tmp_path):
    """On a sound repository prune plans from the merge of its marks with the index; the
    careful plan (every copy scored) must come to the same packs to delete, repack, keep."""
    from sctk.backup.repo.phases import Phases
    from sctk.backup.repo.prune import _careful_plan, _fresh_index, _Marks, _quick_plan

    src = tmp_path / "src"
    src.mkdir()
    (src / "keep.bin").write_bytes(os.urandom(1_000_000))
    (src / "drop.bin").write_bytes(os.urandom(6_000_000))
    backup(repo, src, time=datetime(2026, 1, 1, tzinfo=UTC))  # repacked: mostly garbage
    (src / "drop.bin").unlink()
    (src / "gone.bin").write_bytes(os.urandom(17_000_000))  # a pack of its own: deleted
    backup(repo, src, time=datetime(2026, 1, 2, tzinfo=UTC))
    (src / "gone.bin").unlink()
    (src / "stays.bin").write_bytes(os.urandom(3_000_000))  # kept
    last = backup(repo, src, time=datetime(2026, 1, 3, tzinfo=UTC))
    _fresh_index(repo)  # the sorted index holds the packs this process wrote
    assert not repo.index.entries.extra
    marks = _Marks(repo, [last.id], Phases(None))
    try:
        assert not marks.doubtful
        quick = _quick_plan(repo.index, marks, Phases(None))
        careful = _careful_plan(repo.index, marks.live, Phases(None))
    finally:
        marks.close()
    assert quick is not None and quick == careful
    delete, repack, keep = quick
    assert delete and repack and keep
    report = repo.prune(PrunePolicy(keep_last=1))
    assert (report.deleted_packs, report.repacked_packs) == (len(delete), len(repack))
    assert repo.check(read_data=True).ok


def test_prune_refuses_when_a_referenced_chunk_is_in_no_index(repo, tmp_path):
    """An index file deleted (not damaged: nothing to recover from): the merge of the marks
    with the index finds chunks a snapshot needs that no index lists, and prune refuses
    with the check's own words instead of deleting the packs that hold them."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2_000_000))
    backup(repo, src)
    for name in repo.backend.list("index"):
        repo.backend.delete(name)
    with pytest.raises(RepoError, match="in no index.*prune refuses"):
        repo.prune(None)
    assert len(repo.backend.list("data")) == 1  # its pack is still there


def test_prune_refuses_a_snapshot_file_that_does_not_match_its_name(repo, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    info = backup(repo, src)
    path = Path(repo.url, "snapshots", info.id)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(RepoError, match="prune refuses"):
        repo.prune(None)
