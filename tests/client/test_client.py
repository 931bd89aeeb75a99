"""sctk.client.Client against a served sctk over real HTTP: upload, train, predict,
evaluate, jobs and backups, and every refusal as one ApiError carrying the problem+json."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

import tests.jobs.kinds_for_tests  # noqa: F401 - the test job kinds, for the served worker
from sctk.client import ApiError, Client
from sctk.client import client as client_module
from sctk.storage.engine import make_engine
from tests.helpers import free_port
from tests.security.conftest import create_token
from tests.uq.registry_helpers import TINY, frame

# one worker for the package's tests, so that they share one served sctk (see conftest.py)
pytestmark = pytest.mark.xdist_group("client-server")


def _login(served, role: str) -> Client:
    account = served.accounts[role]
    return Client(served.url, username=account.username, password=account.password)


@pytest.fixture(scope="module")
def analyst(served):
    with _login(served, "analyst") as client:
        yield client


@pytest.fixture(scope="module")
def trained(served, analyst, tmp_path_factory):
    """'runs' uploaded as a DataFrame, 'fresh' as a CSV file, and model 'drag' trained on
    'runs' through the client."""
    analyst.upload(frame(100), name="runs")
    path = tmp_path_factory.mktemp("files") / "fresh.csv"
    frame(30, seed=3).to_csv(path, index=False)
    imported = analyst.upload(path)
    assert imported["dataset"]["name"] == "fresh" and imported["dataset"]["rows"] == 30
    return analyst.train("runs", target="y", features=["a", "b"], config=TINY, name="tiny")


def test_upload_train_predict_and_evaluate(analyst, trained, capsys):
    listed = {d["name"]: d for d in analyst.datasets()}
    assert listed["runs"]["rows"] == 100 and set(listed["runs"]["columns"]) >= {"a", "b", "y"}
    assert trained["name"] == "tiny" and trained["lineage"]["features"] == ["a", "b"]
    assert analyst.model("tiny")["id"] == trained["id"]

    rows = frame(30, seed=3)
    predicted = analyst.predict(trained, rows, alpha=0.2)
    # the inputs, untouched, with the predictions beside them
    pd.testing.assert_frame_equal(predicted[list(rows.columns)], rows)
    assert list(predicted.columns[-5:]) == ["mean", "lower", "upper", "sigma", "psi"]
    assert (predicted["lower"] <= predicted["mean"]).all()
    assert (predicted["mean"] <= predicted["upper"]).all() and (predicted["sigma"] > 0).all()
    assert predicted.attrs["alpha"] == 0.2 and predicted.attrs["model"]["name"] == "tiny"
    # the same rows stored as a dataset: the same predictions, by the model's name
    stored = analyst.predict("tiny", "fresh", alpha=0.2)
    assert list(stored.columns) == ["mean", "lower", "upper", "sigma", "psi"]
    np.testing.assert_allclose(stored["mean"], predicted["mean"], rtol=1e-6)
    np.testing.assert_allclose(stored["upper"], predicted["upper"], rtol=1e-6)

    scores = analyst.evaluate(trained["id"], "fresh", alpha=0.2)
    assert scores["n"] == 30 and scores["alpha"] == 0.2
    inside = ((rows["y"] >= predicted["lower"]) & (rows["y"] <= predicted["upper"])).mean()
    assert scores["coverage"] == pytest.approx(inside)
    assert scores["model"]["id"] == trained["id"]
    # no server path leaves it: the report's files by name only
    assert scores["report"] and all("/" not in name for name in scores["report"].values())

    jobs = analyst.jobs("succeeded")
    assert any(
        j["kind"] == "uq.train" and j["result"]["model"]["id"] == trained["id"] for j in jobs
    )


def test_train_shows_progress_and_can_return_the_job(analyst, trained, capsys):
    capsys.readouterr()
    model = analyst.train("runs", target="y", config=TINY, name="tiny")
    assert model["name"] == "tiny" and model["version"] == trained["version"] + 1
    # not a terminal, not a notebook: a line when the status changes, the last 'succeeded'
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("job ") and "uq.train: succeeded 100%" in lines[-1]

    job = analyst.train("runs", target="y", config=TINY, name="tiny", wait=False)
    assert job["kind"] == "uq.train" and job["status"] in ("queued", "running", "succeeded")
    done = analyst.wait(job, progress=False)
    assert (
        done["status"] == "succeeded"
        and done["result"]["model"]["version"] == trained["version"] + 2
    )


def test_predictions_go_in_parts_alike(analyst, trained, monkeypatch):
    rows = frame(23, seed=5)
    whole = analyst.predict(trained, rows)
    monkeypatch.setattr(client_module, "ROWS_PER_REQUEST", 5)
    parted = analyst.predict(trained, rows)
    pd.testing.assert_frame_equal(parted, whole, check_exact=False, rtol=1e-6)
    empty = analyst.predict(trained, rows.iloc[:0])
    assert len(empty) == 0 and list(empty.columns[-5:]) == [
        "mean",
        "lower",
        "upper",
        "sigma",
        "psi",
    ]


def _refused(call, status: int | None, *fragments: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    error = caught.value
    assert error.status == status, error.problem
    assert error.problem["detail"] == error.detail and error.detail.endswith("."), error.problem
    for fragment in fragments:
        assert fragment in error.detail, (fragment, error.problem)
    assert "Traceback" not in str(error)
    return error


def test_every_refusal_is_an_api_error_with_the_problem(served, analyst, trained):
    account = served.accounts["analyst"]
    _refused(
        lambda: Client(served.url, username=account.username, password="Not-The-Password-1"),
        401,
        "Wrong username or password.",
    )
    rows = frame(4)
    _refused(lambda: analyst.predict(trained, rows.drop(columns=["b"])), 400, "lacks", "b")
    rows.loc[1, "a"] = np.nan
    _refused(lambda: analyst.predict(trained, rows), 400, "NaN")
    _refused(lambda: analyst.predict("no-such-model", rows), 404, "no-such-model")
    _refused(lambda: analyst.train("nothing", target="y"), 404, "nothing")
    _refused(lambda: analyst.evaluate(trained, "runs.npz"), 400, "stored datasets only")
    _refused(lambda: analyst.evaluate(trained, "nothing"), 404, "'nothing'")
    conflict = _refused(lambda: analyst.upload(frame(3), name="runs"), 409, "'runs'")
    assert conflict.problem["title"] == "Conflict" and conflict.response is not None
    broken = _refused(
        lambda: analyst.upload(frame(5), name="checked", schema='[columns.a]\ndtype = "int"\n'),
        422,
    )
    assert broken.problem["violations"], broken.problem
    # a role lacking the permission
    with _login(served, "viewer") as viewer:
        _refused(viewer.backups, 403, "'viewer'", "'backups.manage'")
    # a job that fails on the server, and one that outlasts the wait
    _refused(lambda: analyst.submit("test.user_error", wait=True), None, "'missing' does not exist")
    slow = analyst.submit("test.record", {"path": str(served.settings.home / "ran"), "seconds": 1})
    timed_out = _refused(lambda: analyst.wait(slow, timeout=0.05, progress=False), None, "runs on")
    assert timed_out.problem["job"] == slow["id"]
    # nothing answers at all
    with Client(f"http://127.0.0.1:{free_port()}", token="sctk_x") as nowhere:
        _refused(nowhere.datasets, None, "No answer from", "the server runs")


def test_a_personal_token_and_the_admin_views(served):
    engine = make_engine(served.settings)
    try:
        token, _ = create_token(engine, served.accounts["admin"].username, timedelta(hours=1))
    finally:
        engine.dispose()
    with Client(served.url + "/", token=token) as admin:
        catalog = admin.backups()
        assert catalog["configured"] is False and "passphrase" in (catalog["problem"] or "")
        assert catalog["snapshots"] == []
        done = admin.submit("noop", wait=True)
        assert done["status"] == "succeeded" and done["owner"] == served.accounts["admin"].username
        assert done["id"] in {j["id"] for j in admin.jobs("succeeded", owner=done["owner"])}
    # a login about to expire is renewed before the next request, not answered 401
    with _login(served, "viewer") as viewer:
        first = viewer._token
        viewer._expires_at = time.monotonic() - 1
        assert viewer.datasets() is not None and viewer._token != first
    with pytest.raises(ValueError, match="not both"):
        Client(served.url, token=token, username="x", password="y")
    with pytest.raises(ValueError, match="both username and password"):
        Client(served.url, username="x")
