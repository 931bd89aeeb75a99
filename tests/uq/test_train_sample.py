"""`uq train` on a dataset over uq.train_row_budget trains on a seeded sample, stratified on
the target and drawn a batch at a time (issue 22, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd

from sctk.ops.init_home import init_home
from sctk.pipeline import store
from sctk.pipeline.ingest import Batching, import_local
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import sampling
from tests.helpers import run_sctk
from tests.uq.registry_helpers import TINY, frame

ROWS = 6_000


def _stored(settings, tmp_path, name: str = "big") -> None:
    df = frame(ROWS, seed=4)
    df.loc[df.index[-40:], "y"] += 25.0  # a far tail: few rows a uniform sample could miss
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path, index=False)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            import_local(session, settings.home, path, name=name, batching=Batching(500, 700))
    finally:
        engine.dispose()


def test_the_sample_is_stratified_seeded_and_the_same_for_any_batching(settings, tmp_path):
    _stored(settings, tmp_path)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            ds = store.get(session, "big")

            def batches(size):
                return lambda cols: store.iter_frames(settings.home, ds, size, columns=cols)

            first = sampling.stratified(batches(None), ["a", "b", "y"], "y", 600, seed=1)
            again = sampling.stratified(batches(97), ["a", "b", "y"], "y", 600, seed=1)
            other = sampling.stratified(batches(None), ["a", "b", "y"], "y", 600, seed=2)
            whole = store.read(settings.home, ds)
    finally:
        engine.dispose()
    assert len(first.frame) == 600 and first.rows == ROWS
    assert list(first.frame.columns) == ["a", "b", "y"]
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert first.sha256 == again.sha256 != other.sha256
    # each decile of the target gives exactly its tenth of the sample, the far tail too
    edges = np.quantile(whole["y"], np.arange(1, 10) / 10)
    per_decile = np.bincount(np.searchsorted(edges, first.frame["y"], side="right"))
    assert per_decile.tolist() == [60] * 10
    assert 1 <= (first.frame["y"] > 20).sum() <= 8
    # the rows kept are rows of the dataset, in its order
    merged = first.frame.merge(whole.reset_index(), on=["a", "b", "y"])
    assert len(merged) == 600 and merged["index"].is_monotonic_increasing


def test_uq_train_over_the_budget_says_it_trained_on_a_sample(settings, tmp_path):
    _stored(settings, tmp_path)
    config = tmp_path / "model.toml"
    # what is checked is the sample the model was trained on, not the model: 30 boosting
    # iterations (as tests/uq/test_methods.py's QUICK) instead of the default 100 keep the
    # choice among the learners by CV+ over the sample (its n_train below) and halve its time
    config.write_text(
        "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY.items())
        + "\nseed = 5\n[boost]\nmax_iter = 30\n",
        encoding="utf-8",
    )
    env = {"SCTK_UQ__TRAIN_ROW_BUDGET": "1000"}
    args = ["uq", "train", "--data", "big", "--target", "y", "--features", "a,b"]
    done = run_sctk(*args, "--config", str(config), "--inline", home=settings.home, env=env)
    assert done.returncode == 0, done.stderr
    assert "trained on a sample of 1,000 of 6,000 rows (seed 5, sha256 " in done.stdout
    [model] = json.loads(run_sctk("uq", "models", "list", "--json", home=settings.home).stdout)
    sample = model["lineage"]["dataset"]["sample"]
    assert sample["rows"] == 1000 and sample["of"] == ROWS and sample["seed"] == 5
    assert model["metrics"]["n_dataset"] == ROWS
    assert model["metrics"]["n_train"] == 1000  # cross-conformal over all the sample's rows


MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from sctk import config
    from sctk.pipeline import store
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq import sampling

    home = Path(sys.argv[1])
    engine = make_engine(config.load(home).settings)
    with session_scope(engine) as session:
        ds = store.get(session, "big")
        def batches(cols):
            return store.iter_frames(home, ds, columns=cols)
        sampling.stratified(batches, ["f0", "f1"], "f7", 100, 0)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sample = sampling.stratified(batches, [f"f{k}" for k in range(8)], "f7", 10_000, 0)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(sample.frame), (after - before) * 1024)
    """
)


def test_sampling_memory_does_not_grow_with_the_dataset(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    rows = 1_000_000
    rng = np.random.default_rng(6)
    df = pd.DataFrame({f"f{k}": rng.normal(size=rows) for k in range(8)})
    decoded = int(df.memory_usage(index=False).sum())  # 64 MB as float64
    path = tmp_path / "big.parquet"
    df.to_parquet(path, index=False, row_group_size=50_000)
    del df
    env = {"SCTK_DATA__PARTITION_ROWS": "50000"}
    done = run_sctk("data", "import", str(path), home=home, env=env)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(home)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    kept, grown = (int(v) for v in done.stdout.split())
    assert kept == 10_000
    # the dataset read whole would take its 64 MB at least
    assert grown < decoded / 2, f"sampling grew the process by {grown / 2**20:.1f} MiB"
