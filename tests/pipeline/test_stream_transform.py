"""Pipelines run over a stored dataset's batches, in bounded memory, with the same stored
bytes for any batch size (issue 22, item 2) and progress per batch (item 7)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sctk.ops.init_home import init_home
from sctk.pipeline import store
from sctk.pipeline.ingest import Batching, import_local
from sctk.pipeline.service import run_pipeline
from sctk.pipeline.transforms import parse_pipeline
from tests.helpers import run_sctk

ROWS = 3_000
STEPS = """\
[[steps]]
op = "rename"
columns = { x = "a" }

[[steps]]
op = "filter"
expr = "a > -1.5 and notnull(ok)"

[[steps]]
op = "derive"
column = "r"
expr = "sqrt(a**2 + n) + where(ok, 1, 0)"

[[steps]]
op = "normalise"
columns = ["a", "r"]

[[steps]]
op = "normalise"
columns = ["n"]
method = "minmax"
"""
SPLIT = """
[[steps]]
op = "split"
train = 0.6
calibration = 0.2
test = 0.2
seed = 3
"""


def _source(tmp_path):
    """A file whose batches differ: a true/false column missing in a few rows only, text."""
    rng = np.random.default_rng(21)
    ok = pd.array(rng.random(ROWS) > 0.5, dtype="object")
    ok[[5, 2_500]] = None
    df = pd.DataFrame(
        {
            "x": rng.normal(size=ROWS) * 1e3 + 1e5,
            "n": np.arange(ROWS, dtype="int64"),
            "site": [f"s{k % 7}" for k in range(ROWS)],
            "ok": ok,
        }
    )
    df["x"] = (df["x"] - 1e5) / 1e3
    path = tmp_path / "runs.parquet"
    df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("split", [False, True])
def test_a_streamed_run_stores_the_bytes_of_a_single_batch_run(session, home, tmp_path, split):
    import_local(session, home, _source(tmp_path), name="runs", batching=Batching(500, 1_000))
    pipeline = parse_pipeline(STEPS + (SPLIT if split else ""), "/p/stream.toml")
    small = run_pipeline(
        session, home, ["runs"], pipeline, output="small", batching=Batching(97, 700)
    )
    whole = run_pipeline(
        session, home, ["runs"], pipeline, output="whole", batching=Batching(10**6, 700)
    )
    assert len(small.outputs) == (3 if split else 1)
    for a, b in zip(small.outputs, whole.outputs, strict=True):
        assert a.sha256 == b.sha256 and a.rows == b.rows
        assert store.file_sha256(store.dataset_file(home, a)) == a.sha256
        meta = pq.ParquetFile(store.dataset_file(home, a)).metadata
        assert {meta.row_group(g).num_rows for g in range(meta.num_row_groups - 1)} <= {700}
    assert small.steps == whole.steps
    kept = sum(o.rows for o in small.outputs)
    assert kept == small.steps[1]["rows_out"] < ROWS == small.steps[1]["rows_in"]
    if split:
        assert small.steps[-1]["rows"] == {
            p: o.rows for p, o in zip(("train", "calibration", "test"), small.outputs, strict=True)
        }
        assert 0.5 < small.outputs[0].rows / kept < 0.7
    # scaled with statistics over every kept row, not per batch
    frames = pd.concat([store.read(home, o) for o in small.outputs])
    assert frames["a"].mean() == pytest.approx(0.0, abs=1e-9)
    assert frames["a"].std(ddof=0) == pytest.approx(1.0)
    # a rerun is the same bytes: the outputs are left as they are
    again = run_pipeline(
        session, home, ["runs"], pipeline, output="small", batching=Batching(211, 700)
    )
    assert again.unchanged == [o.name for o in small.outputs]


def test_an_npz_output_and_stacked_inputs(session, home, tmp_path):
    path = _source(tmp_path)
    import_local(session, home, path, name="one", batching=Batching(500, 1_000))
    import_local(session, home, path, name="two", batching=Batching(800, 800))
    pipeline = parse_pipeline(STEPS, "/p/stream.toml")
    npz = run_pipeline(
        session, home, ["one", "two"], pipeline, output="z", fmt="npz", batching=Batching(333)
    )
    parquet = run_pipeline(
        session, home, ["one", "two"], pipeline, output="p", batching=Batching(10**6)
    )
    a, b = store.read(home, npz.outputs[0]), store.read(home, parquet.outputs[0])
    assert len(a) == len(b) == parquet.steps[1]["rows_out"] > ROWS
    np.testing.assert_array_equal(a["r"].to_numpy(), b["r"].to_numpy())


def test_the_job_reports_progress_per_batch_on_the_cli(home, tmp_path, monkeypatch):
    # the real CLI in a subprocess, reading 100 rows at a time from its settings
    path = _source(tmp_path)
    env = {"SCTK_DATA__IMPORT_BATCH_ROWS": "100", "SCTK_DATA__PARTITION_ROWS": "1000"}
    assert run_sctk("data", "import", str(path), home=home, env=env).returncode == 0
    pipe = tmp_path / "p.toml"
    pipe.write_text(STEPS + SPLIT, encoding="utf-8")
    done = run_sctk(
        "data", "transform", "runs", "--pipeline", str(pipe), "--inline", home=home, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "normalise: columns=['a', 'r'], method=zscore, fitted=" in done.stderr
    assert done.stdout.count("stored dataset 'runs-p-") == 3
    from sctk.pipeline.jobs import job_params, pipeline_run
    from tests.pipeline.test_datasets import RecordingContext

    ctx = RecordingContext(home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pipeline_run(job_params(["runs"], STEPS, "/p/p.toml", output="job"), ctx)
    fractions = [v for k, v in ctx.events if k == "progress"]
    # three passes (two normalise steps to fit, then the one that writes) of 30 batches
    assert len(fractions) >= 90
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from sctk import config
    from sctk.pipeline.ingest import Batching
    from sctk.pipeline.service import run_pipeline
    from sctk.pipeline.transforms import parse_pipeline
    from sctk.storage.engine import make_engine, session_scope

    home, batch = Path(sys.argv[1]), int(sys.argv[2])
    pipeline = parse_pipeline(Path(sys.argv[3]).read_text(), "p.toml")
    engine = make_engine(config.load(home).settings)
    with session_scope(engine) as session:
        # warm up every import and the database on a tiny dataset first
        run_pipeline(session, home, ["tiny"], pipeline, output="warm")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = run_pipeline(session, home, ["big"], pipeline, output="out",
                           batching=Batching(batch, batch))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(sum(o.rows for o in out.outputs), (after - before) * 1024)
    """
)


def test_pipeline_memory_does_not_grow_with_the_dataset(tmp_path):
    home = tmp_path / "home"  # SQLite: the bound is the pipeline's, whatever the database
    init_home(home)
    rows = 1_000_000
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({f"f{k}": rng.normal(size=rows) for k in range(8)})
    decoded = int(frame.memory_usage(index=False).sum())  # 64 MB as float64
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, index=False, row_group_size=50_000)
    frame.head(50).to_parquet(tmp_path / "tiny.parquet", index=False)
    del frame
    for name in ("big", "tiny"):
        env = {"SCTK_DATA__PARTITION_ROWS": "50000"}
        done = run_sctk("data", "import", str(tmp_path / f"{name}.parquet"), home=home, env=env)
        assert done.returncode == 0, done.stderr
    pipe = tmp_path / "p.toml"
    pipe.write_text(
        "[[steps]]\nop = 'filter'\nexpr = 'f0 > -3'\n"
        "[[steps]]\nop = 'derive'\ncolumn = 'r'\nexpr = 'sqrt(f1**2 + f2**2)'\n"
        "[[steps]]\nop = 'normalise'\ncolumns = ['f3', 'r']\n"
        "[[steps]]\nop = 'split'\ntrain = 0.6\ncalibration = 0.2\ntest = 0.2\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(home), "20000", str(pipe)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    stored_rows, grown = (int(v) for v in done.stdout.split())
    assert rows * 0.99 < stored_rows < rows
    # the dataset read whole would take its 64 MB at least
    assert grown < decoded / 2, f"the pipeline grew the process by {grown / 2**20:.1f} MiB"
