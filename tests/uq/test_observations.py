"""Coverage watched in production: observations over real HTTP and the CLI, the rolling
coverage and its binomial test, the coverage alert through the bus and the alert engine,
adaptive conformal inference, recalibration from observations (command and task), /metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from sctk.bus import get_bus
from sctk.monitoring.watch import Watch
from sctk.storage.engine import session_scope
from sctk.storage.models import Alert, UqObservation
from sctk.uq import observations, registry
from sctk.uq.jobs import train
from tests.helpers import wait_until
from tests.monitoring.test_watch import FakeCollector
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    accounts,
    assert_problem,
    engine,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import TINY, import_csv


def drawn(n: int, seed: int, noise: float = 0.1) -> pd.DataFrame:
    """The problem of registry_helpers.frame, with the noise level as a parameter."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-2, 2, n)
    b = rng.uniform(-1, 1, n)
    return pd.DataFrame({"a": a, "b": b, "y": np.sin(a) + 0.5 * b + rng.normal(0, noise, n)})


def _train(settings, db) -> int:
    """A small model calibrated on 300 rows (so that its coverage is near 0.9 itself)."""
    import_csv(settings, drawn(600, 0), "runs")
    with session_scope(db) as s:
        params = {"dataset": "runs", "target": "y", "config": {**TINY, "epochs": 20},
                  "name": "drag", "calibration": 0.5}  # fmt: skip
        return train(s, settings.home, params)["model"]["id"]


def _count(db, model_id: int) -> int:
    with session_scope(db) as s:
        return s.scalar(
            select(func.count())
            .select_from(UqObservation)
            .where(UqObservation.model_id == model_id)
        )


def _rows(df: pd.DataFrame) -> list[dict]:
    return df[["a", "b", "y"]].to_dict("records")


@pytest.fixture
def model(api):
    return _train(api.settings, api.engine)


def test_observations_over_http_give_the_rolling_coverage(api, model):
    h = api.headers("analyst")
    r = api.http.post(
        f"/api/v1/models/{model}/observations", json={"rows": _rows(drawn(150, 5))}, headers=h
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recorded"] == 150 and 0.8 <= body["batch_coverage"] <= 1.0
    w = body["window"]
    assert w["n"] == 150 and w["target"] == pytest.approx(0.9) and not w["low"]
    assert _count(api.engine, model) == 150

    shown = api.http.get(f"/api/v1/models/{model}/observations", headers=api.headers("viewer"))
    assert shown.status_code == 200
    obs = shown.json()["observations"]
    assert len(obs) == 150 and obs[-1]["rolling_coverage"] == pytest.approx(w["coverage"])
    assert all(o["covered"] == (o["lower"] <= o["y"] <= o["upper"]) for o in obs)

    metrics = api.http.get("/metrics", headers=api.headers("viewer")).text
    line = next(x for x in metrics.splitlines() if x.startswith("sctk_model_observed_coverage{"))
    assert 'model="drag"' in line and float(line.split()[-1]) == pytest.approx(w["coverage"])

    # a deleted model takes its observations with it (the foreign key cascades)
    assert api.http.delete(f"/api/v1/models/{model}", headers=h).status_code == 200
    assert _count(api.engine, model) == 0


BAD = (
    ({"rows": [{"a": 1.0, "b": 0.5}]}, 400, "has no 'y'"),
    ({"rows": [{"a": 1.0, "b": 0.5, "y": None}]}, 400, "NaN or infinite 'y'"),
    ({"rows": [{"a": 1.0, "y": 0.5}]}, 400, "lacks the column(s) b"),
    ({"rows": [{"a": 1.0, "b": 0.5, "y": 1.0}], "alpha": 1.5}, 400, "alpha must lie strictly"),
    ({"rows": [{"a": 1.0, "b": 0.5, "y": 1.0}], "dataset": "runs"}, 422, "exactly one"),
    ({"dataset": "nope"}, 404, "nope"),
    ({"dataset": "flow.npz"}, 400, "names a file"),
)


def test_bad_observations_are_refused_and_nothing_is_stored(api, model):
    for body, status, fragment in BAD:  # one model for all: training is the slow part
        r = api.http.post(
            f"/api/v1/models/{model}/observations", json=body, headers=api.headers("analyst")
        )
        assert_problem(r, status, fragment)
    # a viewer reads observations but records none, nor sets the adaptive mode
    rows = {"rows": _rows(drawn(3, 1))}
    r = api.http.post(
        f"/api/v1/models/{model}/observations", json=rows, headers=api.headers("viewer")
    )
    assert_problem(r, 403)
    r = api.http.put(
        f"/api/v1/models/{model}/adaptive", json={"enabled": True}, headers=api.headers("viewer")
    )
    assert_problem(r, 403)
    r = api.http.post("/api/v1/models/999/observations", json=rows, headers=api.headers("analyst"))
    assert_problem(r, 404, "No model is")
    assert _count(api.engine, model) == 0


def test_the_alert_fires_on_too_narrow_intervals_not_on_calibrated_ones(settings, engine):  # noqa: F811
    calibrated = _train(settings, engine)
    with session_scope(engine) as s:  # a second version whose intervals are a third as wide
        row = registry.get(s, calibrated)
        narrow_model = registry.load(settings.home, row, private=True)
        narrow_model.calibrator_.scores_ = narrow_model.calibrator_.scores_ / 3
        narrow = registry.save(s, settings.home, narrow_model, "drag", lineage=row.lineage,
                               metrics=row.metrics).id  # fmt: skip
    watch = Watch(settings, sessionmaker(engine), FakeCollector(), get_bus(settings))
    try:
        data = drawn(200, 9)
        X, y = data[["a", "b"]].to_numpy(), data["y"].to_numpy()
        with session_scope(engine) as s:
            ok = observations.record(s, settings, registry.get(s, calibrated), X, y)
            bad = observations.record(s, settings, registry.get(s, narrow), X, y)
        assert ok["window"]["tested"] and not ok["window"]["low"], ok["window"]
        assert bad["window"]["low"] and bad["window"]["p_value"] < 1e-6, bad["window"]
        fired = wait_until(lambda: _coverage_alerts(engine), timeout=20, what="the coverage alert")
    finally:
        watch.close()
    assert [a.labels["model"] for a in fired] == ["drag:2"]
    assert fired[0].status == "firing" and fired[0].severity == "warning"
    assert "below the target 0.900" in fired[0].message


def _coverage_alerts(db) -> list[Alert]:
    with session_scope(db) as s:
        rows = list(s.scalars(select(Alert).where(Alert.rule == "coverage")))
        s.expunge_all()
        return rows


def test_the_binomial_test_asks_for_evidence_not_a_threshold():
    # 85 % coverage in 40 observations is not evidence against 90 %; in 2,000 it is
    few = observations.coverage_test(np.arange(40) % 20 >= 3, 0.1, 0.01, 30)
    many = observations.coverage_test(np.arange(2000) % 20 >= 3, 0.1, 0.01, 30)
    assert few["coverage"] == many["coverage"] == pytest.approx(0.85)
    assert not few["low"] and many["low"]
    # and never before the minimum count, however bad
    assert not observations.coverage_test(np.zeros(10, bool), 0.1, 0.01, 30)["low"]


def test_adaptive_mode_widens_after_misses_and_predictions_use_alpha_t(api, model):
    h = api.headers("analyst")
    r = api.http.put(
        f"/api/v1/models/{model}/adaptive", json={"enabled": True, "gamma": 0.02}, headers=h
    )
    assert r.status_code == 200 and r.json()["adaptive"]["alpha_t"] == pytest.approx(0.1)
    shifted = drawn(120, 11, noise=0.4)  # the noise has grown: the intervals miss
    r = api.http.post(
        f"/api/v1/models/{model}/observations", json={"rows": _rows(shifted)}, headers=h
    )
    assert r.status_code == 200, r.text
    alpha_t = r.json()["adaptive"]["alpha_t"]
    assert alpha_t < 0.1
    point = [{"a": 0.3, "b": 0.1}]
    adapted = api.http.post(f"/api/v1/models/{model}/predict", json={"rows": point}, headers=h)
    body = adapted.json()
    assert body["alpha"] == 0.1 and body["alpha_used"] < 0.1
    api.http.put(f"/api/v1/models/{model}/adaptive", json={"enabled": False}, headers=h)
    plain = api.http.post(f"/api/v1/models/{model}/predict", json={"rows": point}, headers=h)
    assert plain.json()["alpha_used"] == 0.1
    width = lambda b: b["upper"][0] - b["lower"][0]  # noqa: E731
    assert width(body) > width(plain.json())


def test_calibrate_from_observations_command_and_task(settings, engine, sctk_here):  # noqa: F811
    from tests.helpers import run_task

    model_id = _train(settings, engine)
    import_csv(settings, drawn(20, 3).drop(columns=["y"]), "untargeted")
    for args, sentence in (
        (("observe", "drag", "--data", "untargeted"), "has no column 'y'"),
        (("observe", "drag", "--data", "runs", "--alpha", "2"), "alpha must lie strictly"),
        (("observe", "nope", "--data", "runs"), "No model is 'nope'"),
        (("adaptive", "drag", "--on", "--gamma", "2"), "gamma (the adaptive step)"),
        (("calibrate", "drag", "--from-observations"), "too few to calibrate from"),
    ):
        r = sctk_here("uq", *args, home=settings.home)
        assert r.returncode != 0 and sentence in " ".join(r.stderr.split()), (args, r.stderr)
    assert _count(engine, model_id) == 0
    with session_scope(engine) as s:
        assert observations.adaptive_state(s, registry.get(s, model_id)) is None
    import_csv(settings, drawn(200, 21, noise=0.4), "noisier")
    r = sctk_here("uq", "observe", "drag", "--data", "noisier", home=settings.home)
    assert r.returncode == 0, r.stderr
    assert "BELOW TARGET" in r.stdout
    r = sctk_here("uq", "calibrate", "drag", home=settings.home)
    assert r.returncode != 0 and "exactly one of --data" in r.stderr

    result = run_task(settings, "uq_recalibrate")
    assert result.status == "ok" and "recalibrated drag:1" in result.summary
    with session_scope(engine) as s:
        row = registry.get(s, model_id)
        assert row.lineage["calibration"]["observations"] == 200
        # the window counts the new calibration's observations only: none yet
        assert observations.rolling(s, row, settings.uq)["n"] == 0
    import_csv(settings, drawn(200, 22, noise=0.4), "noisier2")
    r = sctk_here("uq", "observe", "drag", "--data", "noisier2", "--json", home=settings.home)
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["batch_coverage"] >= 0.85
    r = sctk_here("uq", "calibrate", "drag", "--from-observations", home=settings.home)
    assert r.returncode == 0, r.stderr
    assert "on its 200 newest observations" in r.stdout


def test_a_cqr_model_adapts_and_is_not_recalibrated_from_what_observations_lack(
    settings,
    engine,  # noqa: F811
):
    # CQR's band comes from quantile learners: adaptive mode must ask the model for it, and
    # observations (predictions and truths, no features) cannot recalibrate it
    from sctk.errors import SctkError

    import_csv(settings, drawn(600, 0), "runs")
    with session_scope(engine) as s:
        params = {"dataset": "runs", "target": "y", "config": {**TINY, "method": "hgb-cqr"},
                  "name": "banded", "calibration": 0.5}  # fmt: skip
        model_id = train(s, settings.home, params)["model"]["id"]
    shifted = drawn(200, 11, noise=0.4)
    X, y = shifted[["a", "b"]].to_numpy(), shifted["y"].to_numpy()
    with session_scope(engine) as s:
        row = registry.get(s, model_id)
        assert row.metrics["method"] == "hgb-cqr"
        observations.set_adaptive(s, row, True, gamma=0.02)
    with session_scope(engine) as s:
        row = registry.get(s, model_id)
        done = observations.record(s, settings, row, X, y, publish=False)
    assert done["adaptive"]["alpha_t"] < 0.1  # the misses widened what comes next
    with session_scope(engine) as s:
        stored = s.scalars(select(UqObservation).order_by(UqObservation.id)).all()
        assert len(stored) == 200 and all(o.lower < o.upper for o in stored)
        # rows after many misses were built at a lower alpha, hence wider
        assert stored[-1].alpha_used < stored[0].alpha_used
        row = registry.get(s, model_id)
        before = row.sha256
        with pytest.raises(SctkError, match="calibrated with the cqr score.*'sctk uq calibrate"):
            observations.recalibrate(s, settings, row)
    with session_scope(engine) as s:
        assert registry.get(s, model_id).sha256 == before
