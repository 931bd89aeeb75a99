"""Whole-field conformal bands: the entire field covered with probability 1 - alpha, where
per-pixel bands cover pixels but almost never a whole field; the option survives a save."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.pipeline import store
from sctk.storage.engine import session_scope
from sctk.uq import evaluation, field_state, fields, registry
from sctk.uq.field_bands import coverages, field_scores
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.field_training import check_config
from sctk.uq.flow import make_pairs
from tests.security.conftest import engine  # noqa: F401 - the fixture
from tests.uq.test_field_hybrid import SMALL


@pytest.fixture(scope="module")
def trained():
    X, _, Y = make_pairs(110, seed=1, problem=SMALL)
    model = FieldHybridRegressor(
        physics="tests.uq.physics_examples:small_flow",
        dx=2 * np.pi / 16,
        epochs=10,
        width=8,
        seed=0,
        band="field",
    ).fit(X[:40], Y[:40], X[40:60], Y[40:60])
    return model, X[40:], Y[40:]


def test_whole_field_bands_cover_whole_fields_and_pixel_bands_do_not(trained):
    model, pool_X, pool_Y = trained
    field_cov, pixel_band_field_cov, pixel_cov = [], [], []
    for split in range(20):
        order = np.random.default_rng(split).permutation(len(pool_X))
        cal, test = order[:35], order[35:]
        for band in ("field", "pixel"):
            model.band = band
            model.calibrate(pool_X[cal], pool_Y[cal])
            out = model.predict_interval(pool_X[test], alpha=0.1)
            cov = coverages(pool_Y[test], out["lower"], out["upper"])
            if band == "field":
                field_cov.append(cov["field_coverage"])
                assert cov["pixel_coverage"] >= cov["field_coverage"]
            else:
                pixel_band_field_cov.append(cov["field_coverage"])
                pixel_cov.append(cov["pixel_coverage"])
    model.band = "field"
    assert 0.85 <= np.mean(field_cov) <= 0.98, field_cov  # 1 - alpha, whole fields at once
    assert 0.87 <= np.mean(pixel_cov) <= 0.94, pixel_cov  # pixel bands: pixels ...
    assert np.mean(pixel_band_field_cov) < 0.3, pixel_band_field_cov  # ... not fields


def test_the_field_score_is_the_largest_normalised_error():
    y = np.zeros((2, 2, 3, 3))
    mean = np.zeros_like(y)
    mean[0, 1, 2, 2], mean[1, 0, 0, 0] = 3.0, -1.0
    sigma = np.full_like(y, 2.0)
    assert field_scores(y, mean, sigma).tolist() == [1.5, 0.5]


def test_the_band_is_saved_and_evaluations_report_both_coverages(trained, settings, engine):  # noqa: F811
    model, pool_X, pool_Y = trained
    model.band = "field"
    model.calibrate(pool_X[:35], pool_Y[:35])
    again = field_state.model_from_state(field_state.model_state(model))
    assert again.band == "field"
    assert np.array_equal(again.calibrator_.scores_, model.calibrator_.scores_)
    with session_scope(engine) as s:
        lineage = {"input": "x", "target": "y", "shape": [2, 16, 16]}
        model_id = registry.save(s, settings.home, model, "wind", lineage=lineage).id
        out = store.Output(
            "wind-test", fields.to_frame(x=pool_X[35:], y=pool_Y[35:]), "parquet", {}
        )
        store.store(s, settings.home, [out], "test", "t")
        result = evaluation.evaluate(s, settings.home, model_id, "wind-test", alpha=0.1)
    assert result["band"] == "field"
    assert result["pixel_coverage"] == pytest.approx(result["coverage"])
    assert 0.0 < result["field_coverage"] <= result["pixel_coverage"]
    saved = json.loads(Path(result["report"]["json"]).read_text())
    assert saved["field_coverage"] == result["field_coverage"]


def test_a_config_names_a_known_band():
    assert check_config({"band": "field"})["band"] == "field"
    with pytest.raises(SctkError, match="band must be 'pixel'"):
        check_config({"band": "everywhere"})
