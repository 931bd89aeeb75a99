"""`sctk data export` and GET /api/v1/datasets/{name}/download: datasets out, streamed."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest

from sctk import config
from sctk.pipeline import store
from sctk.pipeline.ingest import Batching, import_local
from sctk.storage.engine import make_engine, session_scope
from tests.pipeline.test_cli import refused, sctk  # noqa: F401 - fixture
from tests.security.conftest import (  # noqa: F401 - fixtures
    ACCOUNTS,
    GENEROUS_LIMITS,
    assert_problem,
    create_user,
    engine,
    start_api,
    viewer_api,
)

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def _frame(rows: int = 1_200) -> pd.DataFrame:
    rng = np.random.default_rng(8)
    return pd.DataFrame(
        {"x": rng.normal(size=rows), "site": ["=cmd()" if k == 3 else f"s{k}" for k in range(rows)]}
    )


@sqlite_only
def test_export_parquet_is_the_stored_file_and_csv_the_same_rows(
    sctk,  # noqa: F811
    home,
    tmp_path,
    monkeypatch,
):
    src = tmp_path / "runs.csv"
    _frame().to_csv(src, index=False)
    monkeypatch.setenv("SCTK_DATA__PARTITION_ROWS", "500")
    monkeypatch.setenv("SCTK_DATA__IMPORT_BATCH_ROWS", "64")
    assert sctk("data", "import", str(src), "--name", "runs").code == 0
    shown = json.loads(sctk("data", "show", "runs", "--json").out)
    sha = shown["sha256"]
    with session_scope(make_engine(config.load(home).settings)) as session:
        assert store.partitions(home, store.get(session, "runs")) == 3

    out = tmp_path / "out" / "runs.parquet"
    out.parent.mkdir()
    done = sctk("data", "export", "runs", "--out", str(out))
    assert done.code == 0, done
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    csv = tmp_path / "runs.csv.out.csv"
    assert sctk("data", "export", "runs", "--out", str(csv)).code == 0
    back = pd.read_csv(csv)
    expected = _frame()
    assert list(back.columns) == ["x", "site"] and len(back) == len(expected)
    np.testing.assert_allclose(back["x"], expected["x"])
    assert back["site"][3] == "'=cmd()"  # a formula a spreadsheet would run is escaped
    assert back["site"][4] == "s4"

    refused(sctk("data", "export", "runs", "--out", str(tmp_path / "x.xlsx")), "x.xlsx", ".csv")
    refused(sctk("data", "export", "nope", "--out", str(out)), "'nope'")
    refused(sctk("data", "export", "runs", "--out", str(tmp_path / "no" / "r.csv")), "create it")


@sqlite_only
def test_download_streams_parquet_and_csv(viewer_api, engine, tmp_path):  # noqa: F811
    api = viewer_api
    src = tmp_path / "runs.parquet"
    _frame().to_parquet(src, index=False)
    with session_scope(engine) as session:
        ds = import_local(session, api.settings.home, src, batching=Batching(100, 500)).dataset
        sha = ds.sha256
    h = api.headers("viewer")
    r = api.http.get("/api/v1/datasets/runs/download", headers=h)
    assert r.status_code == 200, r.text
    assert hashlib.sha256(r.content).hexdigest() == sha
    r = api.http.get("/api/v1/datasets/runs/download?format=csv", headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    back = pd.read_csv(io.BytesIO(r.content))
    assert len(back) == 1_200 and back["site"][5] == "s5"
    assert_problem(api.http.get("/api/v1/datasets/nope/download", headers=h), 404, "'nope'")
    assert api.http.get("/api/v1/datasets/runs/download?format=xls", headers=h).status_code == 422
    # a changed file is refused before a byte is sent
    store_file = api.settings.home / "data" / "runs.parquet"
    store_file.write_bytes(store_file.read_bytes()[:-10])
    assert_problem(
        api.http.get("/api/v1/datasets/runs/download", headers=h), 400, "failed verification"
    )
