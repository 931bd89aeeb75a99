"""The backup benchmark's many-small-files data set (benchmarks/backup_dataset_small.py):
seeded, the count asked for, 1 to 16 KB a file, no two files alike."""

from __future__ import annotations

import hashlib
import importlib.util
import zlib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "backup_dataset_small.py"


@pytest.fixture(scope="module")
def ds():
    spec = importlib.util.spec_from_file_location("backup_dataset_small", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".backup-dataset.json"
    }


def test_seeded_sized_and_unique(ds, tmp_path):
    meta = ds.generate(tmp_path / "a", 1234, seed=3)
    ds.generate(tmp_path / "b", 1234, seed=3)
    ds.generate(tmp_path / "c", 1234, seed=4)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert len(a) == meta["files"] == 1234
    assert a == b and a != c
    assert meta["bytes"] == sum(map(len, a.values()))
    sizes = [len(v) for v in a.values()]
    assert min(sizes) >= 1000 and max(sizes) <= 16 * 1024
    assert len({hashlib.sha256(v).digest() for v in a.values()}) == len(a)
    # nested run directories, text that compresses and random bytes that do not
    assert any(p.count("/") >= 5 for p in a)
    text = a[next(p for p in a if p.endswith("metrics.csv"))]
    noise = a[next(p for p in a if p.endswith(".png"))]
    assert len(zlib.compress(text)) < len(text) / 2
    assert len(zlib.compress(noise)) > len(noise) * 0.95


def test_refuses_an_existing_directory(ds, tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(SystemExit):
        ds.main(["generate", str(tmp_path / "x"), "--files", "5"])
    with pytest.raises(SystemExit):
        ds.main(["generate", str(tmp_path / "y"), "--files", "0"])
    assert not (tmp_path / "y").exists()
