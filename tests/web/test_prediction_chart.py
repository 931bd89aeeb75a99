"""The model page in Chromium: a tabular prediction drawn sorted by its mean with the band
filled and the observed values as points, the calibration curve beside it, and the rolling
coverage of the model's observations; checked on the rendered pixels, not only the DOM."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sctk.pipeline import store
from sctk.storage.engine import make_engine, session_scope
from sctk.uq import evaluation, observations, registry
from sctk.uq.hybrid import HybridRegressor

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend", ["sqlite"])]

# the band (.18 of the accent #1f4e79 over the white card) and the observed points (#c2571a)
BAND = (215, 223, 231)
OBSERVED = (194, 87, 26)


def _noisy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 6, n)
    return pd.DataFrame({"x": x, "y": np.sin(x) * 3 + rng.normal(0, 0.5, n)})


def _model_and_data(settings) -> int:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            out = store.Output("runs", _noisy(60, 1), "parquet", {"origin": "import", "inputs": []})
            store.store(s, settings.home, [out], "import", "tests")
        train = _noisy(300, 0)
        fitted = HybridRegressor(epochs=30, hidden=(16,), seed=0).fit(
            train[["x"]].to_numpy(), train["y"].to_numpy()
        )
        with session_scope(engine) as s:
            lineage = {"features": ["x"], "target": "y"}
            model_id = registry.save(
                s, settings.home, fitted, "wave", lineage=lineage, metrics={"n_calibration": 75}
            ).id
            evaluation.evaluate(s, settings.home, model_id, "runs", alpha=0.2)
        with session_scope(engine) as s:
            seen = _noisy(80, 2)
            row = registry.get(s, model_id)
            X, y = seen[["x"]].to_numpy(), seen["y"].to_numpy()
            observations.record(s, settings, row, X, y, publish=False)
        return model_id
    finally:
        engine.dispose()


def _pixels(png: bytes, colour: tuple[int, int, int], tolerance: int) -> int:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(image - np.array(colour)).max(axis=2) <= tolerance).sum())


def test_the_prediction_chart_draws_sorted_means_a_filled_band_and_observed_points(
    start_site, browse
):
    site = start_site("analyst")
    model_id = _model_and_data(site.settings)
    b = browse(site)
    b.login("analyst")
    b.goto("/ui/jobs")
    page = b.page
    page.click(f"#models-table a[href='#model-{model_id}']")
    page.wait_for_selector("#model-calibration svg.chart")
    page.wait_for_selector("#coverage-plot svg.chart path.line")
    assert "of the last 80 observations covered" in page.inner_text("#coverage-summary")
    assert page.locator("#observed-plot svg.chart circle.obs").count() == 80

    page.fill("#predict-form input[name=dataset]", "runs")
    page.fill("#predict-form input[name=alpha]", "0.1")
    page.click("#predict-form button[type=submit]")
    chart = page.locator("#prediction-plot svg.chart")
    chart.wait_for()
    assert page.locator("#prediction-plot svg.chart circle.obs").count() == 60
    assert "observed values covered" in page.inner_text("#prediction-summary")
    # the mean is drawn in rank order: its path's x never goes back, its y never down
    d = page.get_attribute("#prediction-plot svg.chart path.line", "d")
    points = np.array([[float(v) for v in p.split(",")] for p in d[1:].split("L")])
    assert np.all(np.diff(points[:, 0]) > 0) and np.all(np.diff(points[:, 1]) <= 1e-6)

    png = chart.screenshot()
    area = Image.open(io.BytesIO(png)).size
    band = _pixels(png, BAND, 6)
    assert band > 0.03 * area[0] * area[1], (band, area)  # a band you can see, filled
    assert _pixels(png, OBSERVED, 40) > 100  # and the observed points on it
    # the calibration curve stands beside the prediction on a desktop window
    pred_box = page.locator("#prediction-plot").bounding_box()
    cal_box = page.locator("#model-calibration").bounding_box()
    assert cal_box["x"] > pred_box["x"] + pred_box["width"] - 1
    b.shoot("model-prediction-sorted")
    assert b.take_errors() == []
