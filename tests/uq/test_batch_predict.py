"""Batch prediction over a whole dataset, locally and on a Dask cluster (issue 22)."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from sctk.errors import Conflict, SctkError
from sctk.pipeline import store
from sctk.pipeline.ingest import Batching, import_local
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import prediction, registry
from sctk.uq.jobs import train
from sctk.uq.predict_job import parse_params, predict_dataset
from tests.pipeline.test_cli import refused, sctk  # noqa: F401 - fixture
from tests.uq.registry_helpers import frame, import_csv, train_params

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])
ROWS = 3_000


@pytest.fixture
def trained(settings, tmp_path):
    """A tiny model and a 3,000-row dataset in partitions of 500 rows."""
    import_csv(settings, frame(200), "runs")
    src = tmp_path / "big.csv"
    frame(ROWS, seed=1).to_csv(src, index=False)
    engine = make_engine(settings)
    with session_scope(engine) as session:
        train(session, settings.home, train_params())
        import_local(session, settings.home, src, name="big", batching=Batching(256, 500))
    yield engine
    engine.dispose()


def _local(engine, home, output="pred-local"):
    with session_scope(engine) as session:
        ds = predict_dataset(session, home, {"model": "drag", "dataset": "big", "output": output})
        return ds.sha256, ds.rows, dict(ds.lineage)


@sqlite_only
def test_local_batch_predict_equals_the_inline_prediction(trained, settings):
    home = settings.home
    sha, rows, lineage = _local(trained, home)
    assert rows == ROWS
    with session_scope(trained) as session:
        model = registry.resolve(session, "drag")
        big = store.get(session, "big")
        stored = store.read(home, store.get(session, "pred-local"))
        inline = prediction.predict_frame(
            session, home, model, store.read(home, big).iloc[:1000], alpha=0.1
        )
        assert lineage["model"] == {
            "id": model.id,
            "name": "drag",
            "version": model.version,
            "sha256": model.sha256,
        }
        assert lineage["inputs"] == [{"name": "big", "sha256": big.sha256, "rows": ROWS}]
        assert store.partitions(home, store.get(session, "pred-local")) == 6
    assert list(stored.columns) == ["a", "b", "mean", "lower", "upper", "sigma", "psi"]
    for key in ("mean", "lower", "upper", "sigma", "psi"):
        np.testing.assert_allclose(stored[key][:1000], inline[key], rtol=1e-6, atol=1e-9)
    # a retried job finds its own result; another output of that name is refused
    assert _local(trained, home)[0] == sha
    with session_scope(trained) as session, pytest.raises(Conflict, match="already exists"):
        predict_dataset(session, home, {"model": "drag", "dataset": "runs", "output": "pred-local"})


def test_bad_parameters_are_one_sentence():
    with pytest.raises(SctkError, match="does not take 'rows'"):
        parse_params({"model": "m", "dataset": "d", "output": "o", "rows": 3})
    with pytest.raises(SctkError, match="needs 'output'"):
        parse_params({"model": "m", "dataset": "d"})
    with pytest.raises(SctkError, match="not its input"):
        parse_params({"model": "m", "dataset": "d", "output": "d"})
    with pytest.raises(SctkError, match="alpha"):
        parse_params({"model": "m", "dataset": "d", "output": "o", "alpha": 2})


def _job_on_a_worker(home: str, output: str) -> tuple[bool, str]:
    from pathlib import Path

    from sctk import config
    from sctk.uq.predict_job import cluster_client

    settings = config.load(Path(home), {"executor": {"kind": "dask"}}).settings
    engine = make_engine(settings)
    try:
        with cluster_client(settings) as client, session_scope(engine) as session:
            params = {"model": "drag", "dataset": "big", "output": output}
            ds = predict_dataset(session, Path(home), params, client=client)
            return client is not None, ds.sha256
    finally:
        engine.dispose()


@sqlite_only
def test_on_a_dask_cluster_equals_the_local_run_even_when_a_worker_dies(trained, settings):
    from dask.distributed import Client, LocalCluster

    home = settings.home
    local_sha, _, _ = _local(trained, home)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        events: list[float] = []
        with session_scope(trained) as session:
            ds = predict_dataset(
                session, home, {"model": "drag", "dataset": "big", "output": "pred-dask"},
                client=client, progress=lambda f, _m: events.append(f),
            )  # fmt: skip
            assert ds.sha256 == local_sha
        assert events == [pytest.approx((k + 1) / 6) for k in range(6)]
        # the workers loaded the model once each, not once per partition
        loads = client.run(lambda: len(registry._loaded))
        assert set(loads.values()) == {1}

        # the job as the Dask executor runs it: a task on a worker, whose partitions become
        # tasks of their own on the same cluster (the job's task leaves its thread meanwhile)
        job = client.submit(_job_on_a_worker, str(home), "pred-in-job", pure=False)
        assert job.result(timeout=120) == (True, local_sha)

        killed: list[int] = []

        def kill_one(fraction: float, _message: str) -> None:
            if not killed:  # after the first partition: the rest are on the workers
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        with session_scope(trained) as session:
            again = predict_dataset(
                session, home, {"model": "drag", "dataset": "big", "output": "pred-killed"},
                client=client, progress=kill_one,
            )  # fmt: skip
            assert killed and again.sha256 == local_sha


@sqlite_only
def test_the_commands_submit_the_job_and_stream_a_prediction_to_a_file(
    trained,
    settings,
    sctk,  # noqa: F811
    tmp_path,
):
    queued = sctk(
        "jobs", "submit", "uq.predict", "--param", "model=drag", "--param", "dataset=big",
        "--param", "output=pred-job", "--json",
    )  # fmt: skip
    assert queued.code == 0, queued
    refused(sctk("jobs", "submit", "uq.predict", "--param", "model=drag"), "needs 'dataset'")
    assert sctk("worker", "--until-idle", "--concurrency", "1").code == 0
    shown = json.loads(sctk("data", "show", "pred-job", "--json").out)
    assert shown["rows"] == ROWS and shown["origin"] == "prediction"
    assert shown["lineage"]["model"]["name"] == "drag"
    tree = sctk("data", "lineage", "pred-job").out
    assert "pred-job  predicted by model 'drag' v1" in tree and "alpha 0.1" in tree
    assert "big  imported from big.csv" in tree

    out = tmp_path / "pred.parquet"
    done = sctk("uq", "predict", "drag", "--data", "big", "--out", str(out), "--json")
    assert done.code == 0, done
    assert json.loads(done.out)["rows"] == ROWS
    with session_scope(trained) as session:
        stored = store.read(settings.home, store.get(session, "pred-job"))
    pd.testing.assert_frame_equal(pd.read_parquet(out), stored)
    # the same bytes when run again; a row group per slice of a partition as it came, its
    # float columns written plain (no dictionary encoder to hash every value)
    again = tmp_path / "again.parquet"
    assert sctk("uq", "predict", "drag", "--data", "big", "--out", str(again)).code == 0
    assert again.read_bytes() == out.read_bytes()
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [500] * 6
    assert "RLE_DICTIONARY" not in meta.row_group(0).column(0).encodings
    csv = tmp_path / "pred.csv"
    assert sctk("uq", "predict", "drag", "--data", "big", "--out", str(csv)).code == 0
    np.testing.assert_allclose(pd.read_csv(csv)["upper"], stored["upper"])
    refused(sctk("uq", "predict", "drag", "--data", "nope", "--out", str(out)), "'nope'")


@sqlite_only
def test_a_damaged_dataset_is_refused_and_nothing_is_written(
    trained,
    settings,
    sctk,  # noqa: F811
    tmp_path,
):
    # the input is hashed while it is predicted: a change found at the end, or a read that
    # fails on the damage, is the verification sentence, and no output is left behind
    with session_scope(trained) as session:
        path = store.dataset_file(settings.home, store.get(session, "big"))
    for offset in (-20, path.stat().st_size // 2):  # the footer; a data page
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        out = tmp_path / "pred.parquet"
        refused(
            sctk("uq", "predict", "drag", "--data", "big", "--out", str(out)),
            "Dataset 'big' failed verification",
            "restore it before predicting on it",
        )
        assert not out.exists() and list(tmp_path.glob("*.parquet*")) == []
        with session_scope(trained) as session, pytest.raises(SctkError, match="verification"):
            predict_dataset(session, settings.home, {"model": "drag", "dataset": "big",
                                                     "output": "pred-bad"})  # fmt: skip
        with session_scope(trained) as session:
            assert store.find(session, "pred-bad") is None
        data[offset] ^= 0xFF  # repaired for the next damage
        path.write_bytes(bytes(data))
