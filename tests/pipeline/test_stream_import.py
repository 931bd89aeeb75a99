"""Local imports read in bounded batches and stored as partitioned Parquet (issue 22)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sctk.errors import InsufficientStorage
from sctk.ops.init_home import init_home
from sctk.pipeline import store
from sctk.pipeline.ingest import Batching, import_local
from sctk.pipeline.limits import TooLarge
from sctk.pipeline.schema import SchemaViolations, parse_schema
from sctk.pipeline.service import import_file

ROWS = 2_500


def _table(rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "n": np.arange(rows, dtype="int64"),
            "site": [f"s{k % 7}" for k in range(rows)],
            "ok": rng.random(rows) > 0.5,
        }
    )
    return df


def _write(directory: Path, fmt: str) -> Path:
    """A file whose batches disagree about types: a missing whole number late in the file
    (int -> float), a key present in one JSON line only."""
    df = _table()
    path = directory / f"big.{fmt}"
    if fmt == "csv":
        df = df.astype({"n": "float64"})
        df.loc[2_100, "n"] = np.nan
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        lines = []
        for k, rec in enumerate(df.to_dict(orient="records")):
            if k == 1_900:
                rec["n"] = None
                rec["flag"] = True
            lines.append(json.dumps(rec))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        df.to_parquet(path, index=False, row_group_size=300)
    else:  # stored and compressed members, and a field column [N, 2, 3]
        rng = np.random.default_rng(4)
        np.savez_compressed(path, x=df["x"].to_numpy(), f=rng.normal(size=(ROWS, 2, 3)))
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "npz"])
def test_streamed_import_equals_the_whole_file_import(session, home, tmp_path, fmt):
    path = _write(tmp_path, fmt)
    streamed = import_local(
        session, home, path, name="streamed", batching=Batching(batch_rows=97, partition_rows=1000)
    ).dataset
    whole = import_local(
        session, home, path, name="whole", batching=Batching(batch_rows=10**6, partition_rows=1000)
    ).dataset
    assert streamed.sha256 == whole.sha256
    assert store.file_sha256(store.dataset_file(home, streamed)) == streamed.sha256
    assert streamed.rows == ROWS and streamed.columns == whole.columns
    # partitioned: row groups of the partition size, read back one at a time
    meta = pq.ParquetFile(store.dataset_file(home, streamed)).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [1000, 1000, 500]
    assert store.partitions(home, streamed) == 3
    parts = pd.concat(list(store.iter_frames(home, streamed)), ignore_index=True)
    pd.testing.assert_frame_equal(parts, store.read(home, streamed))
    # the same values as the file read whole by the upload path
    uploaded = import_file(session, home, path, name="uploaded").dataset
    pd.testing.assert_frame_equal(
        store.read(home, streamed), store.read(home, uploaded), check_dtype=False
    )
    assert streamed.columns == uploaded.columns


def test_schema_violations_are_counted_over_every_batch(session, home, tmp_path):
    df = _table(400)
    df.loc[350, "n"] = 3  # repeats row 4, three batches later
    df.loc[10, "x"] = 99.0
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    schema = parse_schema(
        '[columns.x]\ndtype = "float"\nmax = 10.0\n[columns.n]\ndtype = "int"\nunique = true\n'
    )
    with pytest.raises(SchemaViolations) as caught:
        import_local(session, home, path, schema=schema, batching=Batching(batch_rows=100))
    report = caught.value.report
    assert report.total == 2
    assert [(v.row, v.column) for v in report.violations] == [(11, "x"), (351, "n")]
    assert "repeats row 4" in report.violations[1].problem
    assert store.list_datasets(session) == []
    assert not [p for p in (home / "data").iterdir() if p.is_file()]


def test_a_mixed_column_is_refused_and_nothing_is_stored(session, home, tmp_path):
    lines = [json.dumps({"v": k}) for k in range(300)] + [json.dumps({"v": "text"})]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match="column 'v' mixes number and text"):
        import_local(session, home, path, batching=Batching(batch_rows=50))
    assert store.list_datasets(session) == []


def test_local_limit_and_disk_space(session, home, tmp_path, monkeypatch):
    path = _write(tmp_path, "csv")
    with pytest.raises(TooLarge, match=r"data\.max_import_bytes"):
        import_local(session, home, path, max_bytes=1024)
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: real(p)._replace(free=path.stat().st_size - 1)
    )
    with pytest.raises(InsufficientStorage, match="No space left on the device holding"):
        import_local(session, home, path)
    assert store.list_datasets(session) == []


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from sctk import config
    from sctk.pipeline.ingest import Batching, import_local
    from sctk.storage.engine import make_engine, session_scope

    home, path, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    engine = make_engine(config.load(home).settings)
    with session_scope(engine) as session:
        # warm up every import and the database on a tiny file first
        import_local(session, home, Path(sys.argv[4]), name="warm")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ds = import_local(
            session, home, path, name="big", batching=Batching(batch, 4 * batch)
        ).dataset
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(ds.rows, (after - before) * 1024)
    """
)


def test_import_memory_does_not_grow_with_the_file(tmp_path):
    home = tmp_path / "home"  # SQLite: the bound is the reader's, whatever the database
    init_home(home)
    rows = 1_000_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({f"f{k}": rng.normal(size=rows) for k in range(8)})
    path = tmp_path / "large.parquet"
    frame.to_parquet(path, index=False, row_group_size=100_000)  # 6.4 MB a row group
    decoded = int(frame.memory_usage(index=False).sum())  # 64 MB as float64
    del frame
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("f0,f1\n1.0,2.0\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(home), str(path), "20000", str(tiny)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    stored_rows, grown = (int(v) for v in done.stdout.split())
    assert stored_rows == rows
    # reading the file whole would take its 64 MB at least (twice over, through pandas)
    assert grown < decoded / 2, f"the import grew the process by {grown / 2**20:.1f} MiB"
