"""The dependency report and the quick benchmark of the weekly maintenance."""

from __future__ import annotations

import json

from sctk.ops.quickbench import regressions
from sctk.ops.runner import run_task
from tests.helpers import UNREACHABLE_INDEX, run_sctk


def test_an_unreachable_index_is_said_plainly(settings, monkeypatch):
    for k, v in UNREACHABLE_INDEX.items():
        monkeypatch.setenv(k, v)
    record = run_task(settings, "dependencies")
    assert record.status == "warn" and record.summary == "could not reach the package index"
    assert record.details["installed"]["numpy"]  # what is installed is still listed

    r = run_sctk("deps", "check", "--json", home=settings.home, env=UNREACHABLE_INDEX)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["reachable"] is False and report["outdated"] == []
    assert "could not reach the package index" in report["notes"][0]


def test_quick_benchmark_records_figures_and_compares_with_last_week(settings):
    first = run_task(settings, "quick_benchmark")
    assert first.status == "ok"
    assert {"db_ping_ms", "job_cycle_ms", "matmul_256_ms"} <= set(first.details["figures"])
    second = run_task(settings, "quick_benchmark")
    assert second.details["previous"] == first.details["figures"]


def test_a_figure_twice_as_slow_is_a_regression():
    assert regressions({"a": 30.0, "b": 1.5}, {"a": 10.0, "b": 0.5}) == ["a 30.00 ms (was 10.00)"]
    assert regressions({"a": 30.0}, {}) == []


def test_quick_benchmark_predicts_on_the_models_own_calibration_inputs(settings, engine):
    import numpy as np
    import pandas as pd

    from sctk.storage.engine import session_scope
    from sctk.uq.jobs import train
    from tests.uq.registry_helpers import import_csv, train_params

    rng = np.random.default_rng(0)
    a = rng.uniform(1.0, 3.0, 80)  # never zero: the physics divides by it
    import_csv(settings, pd.DataFrame({"a": a, "y": 1.0 / a + rng.normal(0, 0.01, 80)}), "inv")
    params = train_params("inv", features=["a"])
    params["config"]["physics"] = "tests.uq.physics_examples:inverse_of_first"
    with session_scope(engine) as s:
        train(s, settings.home, params)

    record = run_task(settings, "quick_benchmark")
    assert record.status == "ok", record.summary
    assert record.details["figures"]["predict_1000_rows_ms"] > 0
    assert record.details["notes"]["prediction"] == (
        "model 'drag' v1 on calibration inputs of dataset 'inv'"
    )
