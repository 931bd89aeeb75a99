"""`sctk uq evaluate` and `sctk uq calibrate` on tabular models, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sctk.storage.engine import make_engine, session_scope
from sctk.uq.evaluation import latest_reports
from sctk.uq.jobs import train
from tests.security.conftest import assert_cli_error
from tests.uq.registry_helpers import frame, import_csv, train_params
from tests.uq.test_uq_cli import _ok

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def _trained(settings) -> None:
    import_csv(settings, frame(100), "runs")
    import_csv(settings, frame(200, seed=7), "holdout")
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            train(s, settings.home, train_params(calibration=0.2))  # model 'drag', 20 cal rows
    finally:
        engine.dispose()


@sqlite_only  # the in-place update on PostgreSQL: tests/uq/test_field_registry.py
def test_evaluate_writes_the_report_and_calibrate_replaces_the_scores(
    settings, tmp_path, sctk_here
):
    home = settings.home
    _trained(settings)
    result = json.loads(
        _ok(sctk_here("uq", "evaluate", "drag", "--data", "holdout", "--json", home=home))
    )
    assert result["n"] == 200 and result["alpha"] == 0.1 and result["model"]["kind"] == "tabular"
    for key in ("coverage", "mean_width", "interval_score", "gaussian_nll", "crps"):
        assert np.isfinite(result[key]), key
    assert result["calibration"]["miscalibration_area"] >= 0
    assert result["calibration_curve_source"] == "conformal"  # 20 points reach alpha 0.05
    written = json.loads(Path(result["report"]["json"]).read_text())
    assert written["coverage"] == result["coverage"] and written["data"]["dataset"] == "holdout"
    assert result["report"]["json"].startswith(str(home / "reports/uq/drag-v1-"))
    text = _ok(sctk_here("uq", "evaluate", "drag", "--data", "holdout", home=home))
    assert "coverage" in text and "calibration.png" in text
    # --out elsewhere: the report there, and its copy where the dashboard and /metrics look
    elsewhere = tmp_path / "elsewhere"
    args = ("uq", "evaluate", "drag", "--data", "holdout", "--alpha", "0.2", "--out", elsewhere)
    _ok(sctk_here(*map(str, args), home=home))
    assert (elsewhere / "report.json").is_file() and (elsewhere / "calibration.png").is_file()
    newest = latest_reports(home)[result["model"]["id"]]
    assert newest["alpha"] == 0.2 and newest["written_to"] == str(elsewhere.resolve())
    assert Path(newest["path"]).parent.parent == home / "reports/uq"

    def predicted() -> dict:
        args = ("uq", "predict", "drag", "--data", "holdout", "--json")
        return json.loads(_ok(sctk_here(*args, home=home)))

    first, second = predicted(), predicted()
    assert (first["cached"], second["cached"]) == (False, True)
    shown = json.loads(_ok(sctk_here("uq", "models", "show", "drag", "--json", home=home)))
    cal = json.loads(
        _ok(sctk_here("uq", "calibrate", "drag", "--data", "holdout", "--json", home=home))
    )
    assert (cal["id"], cal["version"]) == (shown["id"], 1) and cal["sha256"] != shown["sha256"]
    assert cal["metrics"]["n_calibration"] == 200
    assert cal["lineage"]["calibration"]["dataset"] == "holdout"
    assert cal["lineage"]["features"] == shown["lineage"]["features"]  # training lineage kept
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            from sctk.security import audit_log

            (entry,) = audit_log.entries(s, event="model.recalibrated")
            assert entry.target == "drag:1" and entry.details["sha256"] == cal["sha256"]
    finally:
        engine.dispose()
    third = predicted()  # the cached answer of the old calibration is gone
    assert third["cached"] is False and third["upper"] != first["upper"]
    assert third["mean"] == pytest.approx(first["mean"], rel=1e-12)  # same network


@sqlite_only
def test_bad_evaluations_and_calibrations_are_one_sentence(settings, tmp_path, sctk_here):
    home = settings.home
    _trained(settings)
    import_csv(settings, frame(30).drop(columns=["y"]), "unlabelled")
    import_csv(settings, frame(30).rename(columns={"b": "bee"}), "renamed")
    import_csv(settings, frame(5), "tiny")
    nan = frame(30)
    nan.loc[3, "y"] = np.nan
    import_csv(settings, nan, "holes")
    taken = tmp_path / "taken"
    taken.write_text("x")
    shown = json.loads(_ok(sctk_here("uq", "models", "show", "drag", "--json", home=home)))
    for command, data, extra, fragment in (
        ("evaluate", "unlabelled", (), "has no column 'y', the target"),
        ("evaluate", "renamed", (), "lacks the column(s) b"),
        ("evaluate", "holes", (), "NaN or infinite values in the target 'y'"),
        ("evaluate", "holdout", ("--alpha", "0"), "alpha must lie strictly"),
        ("evaluate", "holdout", ("--alpha", "0.01"), "too few for alpha=0.01"),
        ("evaluate", "holdout", ("--out", str(taken)), "is not a directory"),
        ("evaluate", "ghost", (), "No dataset is named 'ghost'"),
        ("evaluate", "flows.npz", (), "is a tabular model"),
        ("calibrate", "tiny", (), "too few to calibrate"),
        ("calibrate", "unlabelled", (), "has no column 'y'"),
    ):
        assert_cli_error(
            sctk_here("uq", command, "drag", "--data", data, *extra, home=home), fragment
        )
    assert_cli_error(
        sctk_here("uq", "evaluate", "nope", "--data", "holdout", home=home), "No model is 'nope'"
    )
    again = json.loads(_ok(sctk_here("uq", "models", "show", "drag", "--json", home=home)))
    assert again == shown
    assert not (home / "reports/uq").exists() or not any((home / "reports/uq").iterdir())
