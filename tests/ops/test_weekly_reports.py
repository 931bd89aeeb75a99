"""The dependency report and the quick benchmark of the weekly maintenance."""

from __future__ import annotations

import json

from sctk import config
from sctk.ops.quickbench import regressions
from tests.helpers import UNREACHABLE_INDEX, run_sctk, run_task


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


def without_selftest(settings):
    return config.load(settings.home, {"maintenance": {"benchmark_selftest": False}}).settings


def test_quick_benchmark_records_figures_and_compares_with_last_week(settings, backend):
    # the self-test runs on a scratch SQLite home whatever the service's database: once
    first = run_task(
        settings if backend == "sqlite" else without_selftest(settings), "quick_benchmark"
    )
    assert first.status == "ok", first.summary
    assert {"db_ping_ms", "job_cycle_ms", "matmul_256_ms"} <= set(first.details["figures"])
    if backend == "sqlite":  # the installed product's self-test ran, step by step
        assert first.details["figures"]["selftest_ms"] > 0
        steps = {s["name"]: s["status"] for s in first.details["selftest"]}
        assert steps["uq"] == steps["backup"] == steps["jobs"] == "pass", first.details
        assert first.details["notes"]["selftest"].startswith("self-test passed")
    second = run_task(without_selftest(settings), "quick_benchmark")
    assert second.details["previous"] == first.details["figures"]
    assert "selftest_ms" not in second.details["figures"]


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

    record = run_task(without_selftest(settings), "quick_benchmark")
    assert record.status == "ok", record.summary
    assert record.details["figures"]["predict_1000_rows_ms"] > 0
    assert record.details["notes"]["prediction"] == (
        "model 'drag' v1 on calibration inputs of dataset 'inv'"
    )


def test_the_report_names_what_an_upgrade_would_take_and_what_is_held_back():
    from importlib import metadata

    from sctk.ops.dependency_report import upgrade_outlook

    torch_now, rich_now = metadata.version("torch"), metadata.version("rich")
    # what `pip list --outdated` answers when an index offers torch 2.15 and a newer rich
    rows = [
        {"name": "torch", "version": torch_now, "latest_version": "2.15.0"},
        {"name": "rich", "version": rich_now, "latest_version": "999.0"},
        {"name": "left-pad", "version": "1.0", "latest_version": "2.0"},  # not sctk's
        {"name": "numpy", "version": metadata.version("numpy"), "latest_version": "9.0"},
    ]
    upgrades, held = upgrade_outlook(rows)
    assert upgrades == [{"name": "rich", "installed": rich_now, "to": "999.0"}]
    why = {h["name"]: h["why"] for h in held}
    assert sorted(why) == ["numpy", "torch"]
    assert why["torch"] == "sctk requires torch<2.14,>=2.3"  # sctk's own range
    assert f"scipy {metadata.version('scipy')} requires numpy<" in why["numpy"]  # a pin
