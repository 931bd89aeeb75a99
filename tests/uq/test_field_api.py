"""The API with field models (predict from nested lists [B, C, H, W] or a stored dataset;
bad fields as 4xx problems), and training progress over the job WebSocket."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sctk.pipeline import store
from sctk.storage.engine import session_scope
from sctk.uq import fields, registry
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.flow import make_pairs
from sctk.uq.hybrid import HybridRegressor
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    accounts,
    assert_problem,
    engine,
    sqlite_only,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import SMALL_FLOW as SMALL
from tests.uq.registry_helpers import TINY, frame, import_csv


@pytest.fixture(scope="module")
def flow_model():
    X, _, Y = make_pairs(24, seed=4, problem=SMALL)
    model = FieldHybridRegressor(
        physics="tests.uq.physics_examples:small_flow",
        dx=2 * np.pi / 16,
        width=8,
        depth=2,
        epochs=2,
        seed=0,
    ).fit(X[:10], Y[:10], X[10:20], Y[10:20])
    return X[20:], Y[20:], model


@pytest.fixture
def models(api, flow_model):
    """A field model, a tabular one and a dataset of fields; their ids."""
    X, Y, field_model = flow_model
    df = frame(60)
    tabular = HybridRegressor(**{**TINY, "hidden": tuple(TINY["hidden"])}).fit(
        df[["a", "b"]].to_numpy(), df["y"].to_numpy()
    )
    with session_scope(api.engine) as s:
        lineage = {"input": "x", "target": "y", "shape": [2, 16, 16]}
        f = registry.save(s, api.settings.home, field_model, "wind", lineage=lineage)
        t = registry.save(s, api.settings.home, tabular, "drag", lineage={"features": ["a", "b"]})
        out = store.Output("wind-test", fields.to_frame(x=X, y=Y), "parquet", {})
        store.store(s, api.settings.home, [out], "test", "t")
        return f.id, t.id


def _post(api, model_id, body=None, content=None):
    headers = api.headers("analyst")
    if content is not None:
        headers = {**headers, "content-type": "application/json"}
    return api.http.post(
        f"/api/v1/models/{model_id}/predict", json=body, content=content, headers=headers
    )


@sqlite_only
def test_field_predictions_and_bad_fields(api, models, flow_model):
    X, _, model = flow_model
    field_id, tabular_id = models
    r = _post(api, field_id, {"fields": X[:2].tolist(), "alpha": 0.2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "field" and body["shape"] == [2, 16, 16] and body["rows"] == 2
    assert np.asarray(body["upper"]).shape == (2, 2, 16, 16) and len(body["psi"]) == 2
    want = model.predict_interval(X[:2], alpha=0.2)
    np.testing.assert_allclose(body["lower"], want["lower"], rtol=1e-9, atol=1e-12)
    assert _post(api, field_id, {"fields": X[:2].tolist(), "alpha": 0.2}).json()["cached"]
    by_name = _post(api, field_id, {"dataset": "wind-test"})
    assert by_name.status_code == 200 and by_name.json()["rows"] == 4
    with session_scope(api.engine) as s:
        before = [(r.id, r.sha256) for r in registry.list_models(s)]

    ok = X[:1].tolist()
    for body, status, fragment in (
        ({"fields": X[:1, :, :8, :8].tolist()}, 400, "takes [2, 16, 16]"),
        ({"fields": X[0].tolist()}, 400, "4 levels of nesting"),
        ({"fields": [[[[1.0, 2.0]], [[1.0]]]]}, 400, "same length"),
        ({"fields": [[[["a"]]]]}, 400, "nested lists of numbers"),
        ({"fields": ok, "alpha": 0}, 400, "alpha must lie strictly"),
        ({"fields": ok, "alpha": 1.5}, 400, "alpha must lie strictly"),
        ({"fields": ok, "alpha": 1e-6}, 400, "too few for alpha"),
        ({"rows": [{"a": 1.0}]}, 400, "is a field model"),
        ({"fields": ok, "rows": [{"a": 1.0}]}, 422, "not both"),
    ):
        problem = assert_problem(_post(api, field_id, body), status, fragment)
        assert problem["detail"].endswith(".") and "\n" not in problem["detail"]
    nan_fields = json.dumps({"fields": ok}).replace(str(ok[0][0][0][0]), "NaN", 1)
    assert_problem(_post(api, field_id, content=nan_fields), 400, "NaN or infinite")
    inf_fields = json.dumps({"fields": ok}).replace(str(ok[0][1][2][3]), "-Infinity", 1)
    assert_problem(_post(api, field_id, content=inf_fields), 400, "NaN or infinite")
    assert_problem(_post(api, tabular_id, {"fields": ok}), 400, "is a tabular model")
    assert_problem(_post(api, 99999, {"fields": ok}), 404, "sctk uq models list")
    with session_scope(api.engine) as s:
        assert [(r.id, r.sha256) for r in registry.list_models(s)] == before
    shown = api.http.get(f"/api/v1/models/{field_id}", headers=api.headers("viewer")).json()
    assert shown["kind"] == "field" and shown["lineage"]["shape"] == [2, 16, 16]


def _until_closed(ws) -> list[dict]:
    got = []
    try:
        while True:
            got.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosed:
        return got


@sqlite_only
def test_training_progress_streams_over_the_job_websocket(api):
    from sctk.jobs.worker import Worker

    import_csv(api.settings, frame(60), "runs")
    r = api.http.post(
        "/api/v1/models",
        json={
            "dataset": "runs",
            "target": "y",
            "name": "streamed",
            "config": {"epochs": 4, "hidden": [4], "patience": 10},
            "calibration": 0.3,
        },
        headers=api.headers("analyst"),
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]
    url = api.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
    worker = Worker(api.settings, concurrency=1)
    with connect(url, subprotocols=["sctk", f"bearer.{api.jwt('viewer')}"], open_timeout=20) as ws:
        # the worker starts once the client listens: the epochs arrive live
        runner = threading.Thread(target=lambda: worker.run_until_idle(timeout=120))
        runner.start()
        try:
            got = _until_closed(ws)
        finally:
            runner.join(timeout=120)
            worker.close()
    assert got[-1] == {"job_id": job_id, "final": True, "status": "succeeded"}, got[-3:]
    events = got[:-1]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    progress = [e["data"] for e in events if e["kind"] == "progress"]
    epochs = [p["message"].split(",")[0] for p in progress if p["message"].startswith("epoch ")]
    assert epochs == [f"epoch {i}/4" for i in range(1, 5)], progress
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
