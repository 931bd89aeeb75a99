"""sctk.uq.report: the JSON equals the metrics computed directly; the PNGs are real images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.uq import metrics, report
from sctk.uq.conformal import ConformalCalibrator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 600)
    sd = 0.1 + 0.5 * np.abs(x)
    y = np.sin(x) + sd * rng.standard_normal(x.size)
    mean = np.sin(x) + 0.05
    sigma = sd * 1.1
    cal = ConformalCalibrator(normalized=True).fit(y[:300], mean[:300], sigma[:300])
    lower, upper = cal.interval(mean[300:], sigma[300:], 0.1)
    out = {"mean": mean[300:], "lower": lower, "upper": upper, "sigma": sigma[300:]}
    return x[300:], y[300:], out, cal


def test_scores_equal_the_metrics(data):
    _, y, out, _ = data
    scores = report.evaluate(y, out, 0.1)
    assert scores["coverage"] == metrics.coverage(y, out["lower"], out["upper"])
    assert scores["mean_width"] == metrics.mean_width(out["lower"], out["upper"])
    assert scores["interval_score"] == metrics.interval_score(y, out["lower"], out["upper"], 0.1)
    assert scores["gaussian_nll"] == metrics.gaussian_nll(y, out["mean"], out["sigma"])
    assert scores["crps"] == metrics.gaussian_crps(y, out["mean"], out["sigma"])
    levels, observed = metrics.calibration_curve(
        y, report.gaussian_interval_at(out["mean"], out["sigma"]), report.LEVELS
    )
    assert scores["calibration"]["levels"] == levels.tolist()
    assert scores["calibration"]["observed"] == observed.tolist()
    assert scores["calibration"]["miscalibration_area"] == metrics.miscalibration_area(
        levels, observed
    )
    order = np.argsort(out["sigma"])
    noisy, quiet = order[-60:], order[:60]  # 20% of 300
    assert scores["coverage_noisiest"] == metrics.coverage(
        y[noisy], out["lower"][noisy], out["upper"][noisy]
    )
    assert scores["coverage_quietest"] == metrics.coverage(
        y[quiet], out["lower"][quiet], out["upper"][quiet]
    )


def test_the_calibration_curve_can_come_from_the_conformal_calibrator(data):
    _, y, out, cal = data

    def interval_at(a):
        return cal.interval(out["mean"], out["sigma"], a)

    scores = report.evaluate(y, out, 0.1, interval_at=interval_at)
    _, observed = metrics.calibration_curve(y, interval_at, report.LEVELS)
    assert scores["calibration"]["observed"] == observed.tolist()
    # conformal intervals of a fair model track the diagonal
    assert scores["calibration"]["miscalibration_area"] < 0.05


def test_without_sigma_the_sigma_scores_are_none(data):
    _, y, out, _ = data
    scores = report.evaluate(y, {k: out[k] for k in ("mean", "lower", "upper")}, 0.1)
    assert scores["coverage"] > 0.8
    assert scores["gaussian_nll"] is None and scores["calibration"] is None
    assert scores["coverage_noisiest"] is None


def test_fields_are_flattened():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((4, 2, 8, 8))
    out = {"mean": np.zeros_like(y), "sigma": np.ones_like(y)}
    out["lower"], out["upper"] = out["mean"] - 1.645, out["mean"] + 1.645
    scores = report.evaluate(y, out, 0.1)
    assert scores["n"] == y.size
    assert scores["coverage"] == metrics.coverage(y, out["lower"], out["upper"])


@pytest.mark.parametrize("with_x", [True, False])
def test_write_report_files(tmp_path, data, with_x):
    import matplotlib.image

    x, y, out, _ = data
    paths = report.write_report(tmp_path / "r", y, out, 0.1, "synthetic", x=x if with_x else None)
    document = json.loads(paths["json"].read_text())
    scores = report.evaluate(y, out, 0.1)
    assert document["title"] == "synthetic" and "created_at" in document
    for key, value in scores.items():
        assert document[key] == value, key
    width, height = report.FIGSIZE[0] * report.DPI, report.FIGSIZE[1] * report.DPI
    for name in ("calibration", "intervals"):
        path = paths[name]
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        image = matplotlib.image.imread(path)
        assert image.shape[:2] == (height, width), (name, image.shape)
        assert image.std() > 0  # something was drawn


def test_the_plots_are_deterministic(tmp_path, data):
    _, y, out, _ = data
    first = report.write_report(tmp_path / "a", y, out, 0.1, "t")
    second = report.write_report(tmp_path / "b", y, out, 0.1, "t")
    for name in ("calibration", "intervals"):
        assert first[name].read_bytes() == second[name].read_bytes()
    a, b = (json.loads(p["json"].read_text()) for p in (first, second))
    a.pop("created_at"), b.pop("created_at")
    assert a == b


def test_bad_input_is_refused(data):
    _, y, out, _ = data
    with pytest.raises(SctkError, match="lack upper"):
        report.evaluate(y, {"mean": out["mean"], "lower": out["lower"]}, 0.1)
    with pytest.raises(SctkError, match="values for"):
        report.evaluate(y[:-1], out, 0.1)
    with pytest.raises(SctkError, match="NaN"):
        report.evaluate(np.where(y > 0, np.nan, y), out, 0.1)
    with pytest.raises(SctkError, match="alpha"):
        report.evaluate(y, out, 1.5)
