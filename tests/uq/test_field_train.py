"""Field models trained through the normal path: `sctk uq train --config F.toml` with
kind = "field" (from an .npz file or a stored field dataset) and POST /api/v1/models; then
`uq predict` / `uq evaluate` on the model; bad input as one sentence / a 4xx problem."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.pipeline import store
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import field_training, fields
from sctk.uq.flow import make_pairs
from sctk.uq.jobs import train
from tests.helpers import run_queued_jobs
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    accounts,
    assert_cli_error,
    assert_problem,
    engine,
    sqlite_only,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import SMALL_FLOW as SMALL
from tests.uq.registry_helpers import frame, import_csv
from tests.uq.test_uq_cli import _ok

TINY_FIELD = {"kind": "field", "physics": "coarse", "width": 4, "depth": 1, "epochs": 2}


@pytest.fixture(scope="module")
def flows():
    X, _, Y = make_pairs(24, seed=2, problem=SMALL)
    return X, Y


def _config(tmp_path, **settings) -> str:
    lines = ["[model]"]
    for key, value in {**TINY_FIELD, **settings}.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / f"field{len(list(tmp_path.glob('field*.toml')))}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _state(settings) -> tuple[list, list]:
    eng = make_engine(settings)
    try:
        with session_scope(eng) as s:
            from sctk.uq import registry

            return (
                sorted(d.name for d in store.list_datasets(s)),
                [(r.name, r.version) for r in registry.list_models(s)],
            )
    finally:
        eng.dispose()


@sqlite_only
def test_train_a_field_model_from_an_npz_then_predict_and_evaluate(
    settings, tmp_path, sctk_here, flows
):
    home = settings.home
    X, Y = flows
    npz = tmp_path / "wind.npz"
    np.savez(npz, x=X[:18], y=Y[:18])
    held = tmp_path / "held.npz"
    np.savez(held, x=X[18:], y=Y[18:])
    config = _config(tmp_path, seed=3)
    args = ("uq", "train", "--data", str(npz), "--config", config, "--calibration", "0.5")
    model = json.loads(_ok(sctk_here(*args, "--inline", "--json", home=home)))
    assert (model["name"], model["version"], model["kind"]) == ("wind", 1, "field")
    assert model["lineage"]["shape"] == [2, 16, 16]
    assert model["lineage"]["dataset"]["name"] == "wind"
    assert model["lineage"]["calibration"] == {"fraction": 0.5, "seed": 3}
    assert model["config"]["physics"] == "sctk.uq.flow:coarse_physics"
    assert model["config"]["dx"] == pytest.approx(2 * np.pi / 16)
    m = model["metrics"]
    assert (m["n_train_fields"], m["n_calibration_fields"], m["epochs_run"]) == (9, 9, 2)
    assert m["n_calibration"] == 9 * 2 * 16 * 16 and 0.8 < m["coverage"] <= 1.0
    # the stored dataset records its field shape; training again from it finds the same data
    assert _state(settings) == (["wind"], [("wind", 1)])
    again = json.loads(_ok(sctk_here(*args, "--inline", "--json", home=home)))
    assert again["version"] == 2 and again["sha256"] == model["sha256"]  # seeded
    assert _state(settings)[0] == ["wind"]
    by_name = json.loads(
        _ok(
            sctk_here(
                "uq", "train", "--data", "wind", "--config", config, "--name", "wind-b",
                "--inline", "--json", home=home,
            )
        )
    )  # fmt: skip
    assert by_name["kind"] == "field" and by_name["lineage"]["dataset"]["name"] == "wind"

    out = tmp_path / "pred.npz"
    text = _ok(
        sctk_here("uq", "predict", "wind", "--data", str(held), "--out", str(out), home=home)
    )
    assert "predicted 6 fields" in text
    with np.load(out) as pred:
        assert pred["mean"].shape == (6, 2, 16, 16) and (pred["lower"] <= pred["upper"]).all()
        assert pred["psi"].shape == (6,)
    report = json.loads(
        _ok(sctk_here("uq", "evaluate", "wind:1", "--data", str(held), "--json", home=home))
    )
    assert report["n"] == 6 * 2 * 16 * 16 and 0.5 < report["coverage"] <= 1.0


@sqlite_only
def test_bad_field_training_input_is_one_sentence_and_stores_nothing(
    settings, tmp_path, sctk_here, flows
):
    home = settings.home
    X, Y = flows
    import_csv(settings, frame(30), "runs")
    before = _state(settings)
    config = _config(tmp_path)
    nan_x = X[:12].copy()
    nan_x[4, 1, 2, 3] = np.nan
    cases = {
        "nan.npz": ({"x": nan_x, "y": Y[:12]}, "holds NaN or infinite values (first in field 4)"),
        "shape.npz": ({"x": X[:12, :, :, :8], "y": Y[:12]}, "give one target field of"),
        "flat.npz": ({"x": X[:12, 0, 0], "y": Y[:12]}, "a field model needs fields [N, C, H, W]"),
        "nox.npz": ({"u": X[:12], "y": Y[:12]}, "has no array 'x'"),
    }
    for file_name, (arrays, fragment) in cases.items():
        path = tmp_path / file_name
        np.savez(path, **arrays)
        result = sctk_here("uq", "train", "--data", str(path), "--config", config, home=home)
        assert_cli_error(result, fragment)
    for data, cfg, fragment in (
        ("runs", config, "Dataset 'runs' has no column 'x'"),
        ("gone", config, "No dataset is named 'gone'"),
        ("runs", _config(tmp_path, physics="bogus"), "The physics 'bogus' is not registered"),
        ("runs", _config(tmp_path, kind="fields"), "must be one of field, tabular"),
        ("runs", _config(tmp_path, epochs=0), "'epochs' must be a whole number"),
        ("runs", _config(tmp_path, widht=3), "Unknown field-model setting(s) widht"),
    ):
        result = sctk_here("uq", "train", "--data", data, "--config", cfg, home=home)
        assert_cli_error(result, fragment)
    tabular = tmp_path / "tab.toml"
    tabular.write_text("[model]\nepochs = 2\n", encoding="utf-8")
    np.savez(tmp_path / "ok.npz", x=X[:12], y=Y[:12])
    result = sctk_here(
        "uq", "train", "--data", str(tmp_path / "ok.npz"), "--target", "y", "--config",
        str(tabular), home=home,
    )  # fmt: skip
    assert_cli_error(result, "a tabular model trains on a stored dataset")
    assert _state(settings) == before


def test_a_dataset_without_recorded_shape_is_read_as_square_velocity_fields(settings, flows):
    X, Y = flows
    eng = make_engine(settings)
    try:
        with session_scope(eng) as s:
            out = store.Output("plain", fields.to_frame(x=X[:16], y=Y[:16]), "parquet", {})
            store.store(s, settings.home, [out], "test", "t")
            odd = fields.to_frame(x=X[:16, :, :, :8], y=Y[:16, :, :, :8])
            store.store(s, settings.home, [store.Output("odd", odd, "parquet", {})], "t", "t")
            config = {**TINY_FIELD, "physics": "identity", "seed": 1}
            row = train(s, settings.home, {"dataset": "plain", "config": config})["model"]
            assert row["lineage"]["shape"] == [2, 16, 16] and row["name"] == "plain-y"
            assert row["config"]["physics"] == "sctk.uq.fields:identity"
            with pytest.raises(SctkError, match="not a field of 2 x n x n values"):
                train(s, settings.home, {"dataset": "odd", "config": config})
            with pytest.raises(SctkError, match="too few to hold out"):
                train(s, settings.home, {"dataset": "plain", "config": config, "calibration": 0.01})
    finally:
        eng.dispose()


@sqlite_only
def test_post_models_trains_a_field_model_as_a_job(api, flows):
    X, Y = flows
    with session_scope(api.engine) as s:
        out = store.Output(
            "gusts",
            fields.to_frame(x=X, y=Y),
            "parquet",
            {"fields": {"shape": [2, 16, 16]}},
        )
        store.store(s, api.settings.home, [out], "test", "t")
    import_csv(api.settings, frame(30), "runs")
    h = api.headers("analyst")
    body = {"dataset": "gusts", "name": "gusts", "config": dict(TINY_FIELD), "calibration": 0.3}
    r = api.http.post("/api/v1/models", json=body, headers=h)
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]
    for bad, status, fragment in (
        ({"dataset": "runs", "config": {"kind": "field"}}, 400, "has no column 'x'"),
        ({"dataset": "gusts", "config": {"kind": "blob"}}, 400, "must be one of field, tabular"),
        ({"dataset": "gusts", "features": ["x"], "config": {"kind": "field"}}, 400, "'features'"),
        ({"dataset": "gusts", "config": {"kind": "field", "dx": -1}}, 400, "'dx' must be"),
        ({"dataset": "gusts"}, 400, "needs 'target'"),
        ({"dataset": "nope", "config": {"kind": "field"}}, 404, "No dataset"),
    ):
        assert_problem(api.http.post("/api/v1/models", json=bad, headers=h), status, fragment)
    run_queued_jobs(api.settings)
    done = api.http.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert done["status"] == "succeeded", done
    model = done["result"]["model"]
    assert model["kind"] == "field" and model["lineage"]["shape"] == [2, 16, 16]
    pred = api.http.post(
        f"/api/v1/models/{model['id']}/predict", json={"fields": X[:2].tolist()}, headers=h
    )
    assert pred.status_code == 200, pred.text
    assert pred.json()["shape"] == [2, 16, 16] and len(pred.json()["psi"]) == 2
    assert field_training.physics_name("coarse solver") == "sctk.uq.flow:coarse_physics"


def _upload(api, headers, file_name: str, **arrays) -> httpx.Response:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return api.http.post(
        f"/api/v1/datasets?filename={file_name}",
        content=buffer.getvalue(),
        headers={**headers, "Content-Type": "application/octet-stream"},
    )


@sqlite_only
def test_upload_a_field_npz_then_train_and_predict_through_the_api_alone(api, flows):
    X, Y = flows
    h = api.headers("analyst")
    r = _upload(api, h, "gale.npz", x=X, y=Y, re=np.linspace(100.0, 200.0, len(X)))
    assert r.status_code == 201, r.text
    ds = r.json()["dataset"]
    assert (ds["name"], ds["rows"], ds["columns"]["x"]) == ("gale", len(X), "object")
    assert ds["lineage"]["fields"] == {
        "columns": {"x": [2, 16, 16], "y": [2, 16, 16]},
        "shape": [2, 16, 16],
    }
    # data a field model cannot take is refused before any job: the recorded shapes say so
    assert _upload(api, h, "flat.npz", x=X[:, 0], y=Y[:, 0]).status_code == 201
    assert _upload(api, h, "odd.npz", x=X, y=Y[:, :1]).status_code == 201
    for name, fragment in (
        ("flat", "column 'x' holds fields of shape [16, 16]; a field model needs fields [C, H, W]"),
        ("odd", "column 'y' holds fields of shape [1, 16, 16], 'x' of [2, 16, 16]"),
    ):
        body = {"dataset": name, "config": dict(TINY_FIELD)}
        assert_problem(api.http.post("/api/v1/models", json=body, headers=h), 400, fragment)
    for arrays, fragment in (
        ({"x": X[:0], "y": Y[:0]}, "array 'x' has no rows"),
        ({"x": X, "y": Y[:5]}, "different numbers of rows (first dimension: 'x' 24, 'y' 5)"),
        ({"x": np.full((3, 2), "a")}, "holds text values"),
    ):
        assert_problem(_upload(api, h, "bad.npz", **arrays), 422, "bad.npz: ", fragment)

    config = dict(TINY_FIELD, physics="identity", seed=1)  # coarse physics takes seconds
    body = {"dataset": "gale", "config": config, "calibration": 0.3}
    r = api.http.post("/api/v1/models", json=body, headers=h)
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]
    run_queued_jobs(api.settings)
    done = api.http.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert done["status"] == "succeeded", done
    model = done["result"]["model"]
    assert (model["name"], model["kind"], model["lineage"]["shape"]) == (
        "gale-y",
        "field",
        [2, 16, 16],
    )
    assert model["lineage"]["dataset"] == {"name": "gale", "sha256": ds["sha256"]}
    pred = api.http.post(
        f"/api/v1/models/{model['id']}/predict", json={"dataset": "gale"}, headers=h
    )
    assert pred.status_code == 200, pred.text
    out = pred.json()
    assert (out["kind"], out["rows"], out["shape"]) == ("field", len(X), [2, 16, 16])
    lower, upper = np.asarray(out["lower"]), np.asarray(out["upper"])
    assert lower.shape == (len(X), 2, 16, 16) and (lower < upper).all()
    inside = (lower <= Y) & (upper >= Y)
    assert inside.mean() > 0.7  # calibrated at alpha 0.1 on a share of these very fields


@sqlite_only
def test_an_imported_field_dataset_with_nan_is_refused_at_training(settings, flows):
    X, Y = flows
    nan_x = X[:12].copy()
    nan_x[5, 0, 1, 1] = np.nan
    eng = make_engine(settings)
    try:
        with session_scope(eng) as s:
            from sctk.pipeline import service

            path = settings.home / "nan.npz"
            np.savez(path, x=nan_x, y=Y[:12])
            service.import_file(s, settings.home, path)  # stored: import does not judge values
            with pytest.raises(
                SctkError, match=r"column 'x' holds NaN or infinite values \(first in row 5\)"
            ):
                train(s, settings.home, {"dataset": "nan", "config": dict(TINY_FIELD)})
    finally:
        eng.dispose()
