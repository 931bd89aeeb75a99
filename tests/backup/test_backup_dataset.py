"""The backup benchmark's reference data set (benchmarks/backup_dataset.py) at a tiny scale:
the same seed gives the same bytes, before and after `mutate`, so every tool compared in
benchmarks/bench_backup.py backs up the same input."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "backup_dataset.py"
SCALE = 0.002  # about 2 MB: a few hundred KB of database, 60 small files


@pytest.fixture(scope="module")
def ds():
    spec = importlib.util.spec_from_file_location("backup_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(db)
    try:
        return tuple(
            con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("measurements", "events")
        )
    finally:
        con.close()


def test_same_seed_same_bytes_and_mutate_is_deterministic(ds, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    stamp = ds.generate(a, SCALE, seed=11)
    ds.generate(b, SCALE, seed=11)
    ds.generate(c, SCALE, seed=12)
    first = ds.digest(a)
    assert first == ds.digest(b)
    assert first != ds.digest(c)
    assert stamp["files"] == len(first) > 60
    kinds = {Path(p).suffix for p in first}
    assert {".db", ".npy", ".csv", ".json", ".md", ".bin"} <= kinds
    rows_before = _rows(a / "sctk.db")
    assert rows_before[0] >= 1000 and rows_before[1] >= 200

    changes = ds.mutate(a, seed=11)
    assert changes == ds.mutate(b, seed=11)
    after = ds.digest(a)
    assert after == ds.digest(b)
    changed = {p for p in first if p in after and after[p] != first[p]}
    # about 5% of the files changed, plus the database
    assert "sctk.db" in changed
    assert 0.02 * len(first) <= len(changed) - 1 <= 0.08 * len(first)
    assert changes["files_added"] >= 1 and changes["files_removed"] >= 1
    rows_after = _rows(a / "sctk.db")
    assert rows_after[0] == rows_before[0] * 102 // 100
    assert changes["db_rows"]["updated"] >= rows_before[0] // 100


def test_bad_input_is_refused(ds, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        ds.generate(tmp_path / "x", 0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        ds.generate(tmp_path / "full", SCALE)
    with pytest.raises(ValueError, match="no generated data set"):
        ds.mutate(tmp_path / "full")
    ds.generate(tmp_path / "d", SCALE)
    ds.mutate(tmp_path / "d")
    before = ds.digest(tmp_path / "d")
    with pytest.raises(ValueError, match="already mutated"):
        ds.mutate(tmp_path / "d")
    assert ds.digest(tmp_path / "d") == before
