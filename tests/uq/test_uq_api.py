"""/api/v1/models over real HTTP: train as a job, show, predict, delete, and bad input."""

from __future__ import annotations

import json

import pytest

from sctk.storage.engine import session_scope
from sctk.uq import cache, registry
from sctk.uq.jobs import train
from tests.helpers import run_queued_jobs
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    accounts,
    assert_problem,
    engine,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import frame, import_csv, train_params


@pytest.fixture
def trained(api):
    """A model trained on 'runs' (20 calibration rows) via the job function; its id."""
    settings = api.settings
    import_csv(settings, frame(100), "runs")
    import_csv(settings, frame(12, seed=3), "fresh")
    import_csv(settings, frame(12, seed=3).rename(columns={"a": "alpha"}), "renamed")
    with session_scope(api.engine) as s:
        result = train(s, settings.home, train_params(calibration=0.2))
    return result["model"]["id"]


def _state(api) -> list:
    with session_scope(api.engine) as s:
        return [(r.id, r.sha256) for r in registry.list_models(s)]


def test_list_show_predict_and_delete(api, trained):
    h = api.headers("analyst")
    listed = api.http.get("/api/v1/models", headers=api.headers("viewer")).json()
    assert [m["id"] for m in listed] == [trained]
    shown = api.http.get(f"/api/v1/models/{trained}", headers=h).json()
    assert shown["lineage"]["features"] == ["a", "b"] and shown["metrics"]["n_calibration"] == 20

    rows = [{"a": 0.1 * i, "b": -0.2, "extra": 7.0} for i in range(5)]
    r = api.http.post(f"/api/v1/models/{trained}/predict", json={"rows": rows}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == 5 and body["alpha"] == 0.1
    for key in ("mean", "lower", "upper", "sigma", "psi"):
        assert len(body[key]) == 5
    assert all(lo <= hi for lo, hi in zip(body["lower"], body["upper"], strict=True))

    r = api.http.post(
        f"/api/v1/models/{trained}/predict", json={"dataset": "fresh", "alpha": 0.2}, headers=h
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["mean"]) == 12 and r.json()["cached"] is False
    again = api.http.post(
        f"/api/v1/models/{trained}/predict", json={"dataset": "fresh", "alpha": 0.2}, headers=h
    ).json()
    assert again["cached"] is True and again["mean"] == r.json()["mean"]

    r = api.http.delete(f"/api/v1/models/{trained}", headers=h)
    assert r.status_code == 200 and r.json()["id"] == trained
    assert _state(api) == []
    assert not (api.settings.home / "results/models/drag").exists()
    assert_problem(
        api.http.post(f"/api/v1/models/{trained}/predict", json={"rows": rows}, headers=h), 404
    )


BAD_PREDICTIONS = (
    ({"rows": [{"a": 1.0, "b": None}]}, 400, "NaN"),
    ({"rows": [{"a": 1.0, "b": 2.0}], "alpha": 1.5}, 400, "alpha must lie strictly"),
    ({"rows": [{"a": 1.0, "b": 2.0}], "alpha": 0}, 400, "alpha must lie strictly"),
    ({"rows": [{"a": 1.0, "b": 2.0}], "alpha": 0.01}, 400, "too few for alpha=0.01"),
    ({"rows": [{"a": 1.0}]}, 400, "lacks the column(s) b"),
    ({"rows": [{"a": 1.0, "b": 2.0}, {"a": 1.0}]}, 400, "missing, NaN"),
    ({"dataset": "renamed"}, 400, "lacks the column(s) a"),
    ({"dataset": "nope"}, 404, "No dataset is named 'nope'"),
    ({"rows": [{"a": 1.0, "b": 2.0}], "dataset": "fresh"}, 422, "not both"),
    ({"rows": [{"a": 1.0, "b": 2.0}], "colour": "red"}, 422, "colour"),
    ({"rows": []}, 422, "rows"),
    ({"rows": [{"a": 1.0, "b": 2.0}]} | {"rows": [{"a": "x"}]}, 422, "rows"),
)


def test_bad_predictions_are_one_sentence_and_change_nothing(api, trained):
    before = _state(api)
    for body, status, fragment in BAD_PREDICTIONS:
        hits = cache.stats()["hits"]
        r = api.http.post(
            f"/api/v1/models/{trained}/predict", json=body, headers=api.headers("analyst")
        )
        problem = assert_problem(r, status, fragment)
        assert problem["detail"].endswith(".") and "\n" not in problem["detail"], problem
        assert _state(api) == before
        assert cache.stats()["hits"] == hits


def test_nan_literal_in_rows_is_refused(api, trained):
    raw = '{"rows": [{"a": NaN, "b": 1.0}]}'
    r = api.http.post(
        f"/api/v1/models/{trained}/predict",
        content=raw,
        headers={**api.headers("analyst"), "content-type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text
    assert "NaN" in r.json()["detail"] or "nan" in r.json()["detail"].lower()


def test_raw_json_bodies_decode_as_the_standard_library_does(api, trained):
    """The models routes decode bodies with pydantic's parser and fall back to json.loads:
    what either accepts is predicted, what both refuse is one sentence naming the body."""
    h = {**api.headers("analyst"), "content-type": "application/json"}
    url = f"/api/v1/models/{trained}/predict"
    # a lone surrogate escape: refused by the fast parser, accepted by json.loads
    accepted = '{"rows": [{"a": 0.5, "b": 1.0, "\\ud800": 2.0}], "alpha": 0.2}'
    r = api.http.post(url, content=accepted, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == 1 and r.json()["alpha"] == 0.2
    before = _state(api)
    problem = assert_problem(api.http.post(url, content='{"rows": [{"a": 1.0,', headers=h), 422)
    assert problem["detail"].startswith("Invalid body: not valid JSON ("), problem
    assert problem["detail"].endswith(".") and "\n" not in problem["detail"]
    assert _state(api) == before


def test_unknown_model_ids_are_404(api, trained):
    h = api.headers("analyst")
    for call in (
        lambda: api.http.get("/api/v1/models/999", headers=h),
        lambda: api.http.delete("/api/v1/models/999", headers=h),
        lambda: api.http.post("/api/v1/models/999/predict", json={"rows": [{"a": 1}]}, headers=h),
    ):
        assert_problem(call(), 404, "sctk uq models list")
    assert len(_state(api)) == 1


def test_post_models_queues_a_training_job_that_a_worker_runs(api):
    import_csv(api.settings, frame(60), "runs")
    h = api.headers("analyst")
    r = api.http.post(
        "/api/v1/models",
        json={
            "dataset": "runs",
            "target": "y",
            "name": "queued",
            "config": {"epochs": 2, "hidden": [4]},
            "calibration": 0.3,
        },
        headers=h,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]
    job = api.http.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert job["kind"] == "uq.train" and job["owner"] == api.accounts["analyst"].username
    for body, fragment in (
        ({"dataset": "runs", "target": "nope"}, "has no column 'nope'"),
        ({"dataset": "runs", "target": "y", "config": {"epochz": 1}}, "epochz"),
        # a physics that is not there is refused now, not by a job that fails later
        (
            {"dataset": "runs", "target": "y", "config": {"physics": "no_such_pkg.mod:fn"}},
            "The physics 'no_such_pkg.mod:fn' is not registered",
        ),
        (
            {"dataset": "runs", "config": {"kind": "field", "physics": "tests.uq:nope"}},
            "The physics 'tests.uq:nope' is not registered",
        ),
        ({"dataset": "gone", "target": "y"}, "No dataset"),
    ):
        problem = assert_problem(
            api.http.post("/api/v1/models", json=body, headers=h),
            0 or (404 if fragment == "No dataset" else 400),
            fragment,
        )
        assert json.dumps(problem)
    assert_problem(
        api.http.post("/api/v1/models", json={"dataset": "runs", "target": "y", "x": 1}, headers=h),
        422,
        "x",
    )
    jobs = api.http.get("/api/v1/jobs?limit=50", headers=h).json()
    assert [j["id"] for j in jobs if j["kind"] == "uq.train"] == [job_id]
    # a worker (as `sctk serve` runs) trains it, reporting progress per epoch
    run_queued_jobs(api.settings)
    done = api.http.get(f"/api/v1/jobs/{job_id}", headers=h).json()
    assert done["status"] == "succeeded", done
    assert done["result"]["model"]["name"] == "queued"
    events = api.http.get(f"/api/v1/jobs/{job_id}/events", headers=h).json()
    messages = [e["data"].get("message", "") for e in events if e["kind"] == "progress"]
    assert any(m.startswith("epoch 2/2") for m in messages), messages


def test_the_newest_evaluation_is_served_without_server_paths(api, trained):
    from sctk.uq import evaluation

    url = f"/api/v1/models/{trained}/evaluation"
    r = api.http.get(url, headers=api.headers("viewer"))
    assert r.status_code == 200 and r.json()["evaluation"] is None
    import_csv(api.settings, frame(60, seed=5), "labelled")
    with session_scope(api.engine) as s:
        evaluation.evaluate(s, api.settings.home, trained, "labelled", alpha=0.2)
    got = api.http.get(url, headers=api.headers("viewer")).json()["evaluation"]
    assert got["data"]["dataset"] == "labelled" and "path" not in got
    assert got["alpha"] == 0.2 and got["calibration"]["levels"]
