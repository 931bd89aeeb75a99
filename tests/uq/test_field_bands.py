"""Whole-field conformal bands: the entire field covered with probability 1 - alpha, where
per-pixel bands cover pixels but almost never a whole field; the option survives a save."""

from __future__ import annotations

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.uq import field_state
from sctk.uq.field_bands import coverages, field_scores
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.field_training import check_config
from sctk.uq.flow import make_pairs
from tests.uq.test_field_hybrid import SMALL, small_physics


@pytest.fixture(scope="module")
def trained():
    X, _, Y = make_pairs(110, seed=1, problem=SMALL)
    model = FieldHybridRegressor(
        physics=small_physics, dx=2 * np.pi / 16, epochs=10, width=8, seed=0, band="field"
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


def test_the_band_is_saved_with_the_model_and_checked_in_a_config(trained):
    model, pool_X, pool_Y = trained
    model.physics = "sctk.uq.flow:coarse_physics"  # a registered name, so it can be saved
    try:
        again = field_state.model_from_state(field_state.model_state(model))
    finally:
        model.physics = small_physics
    assert again.band == "field"
    assert np.array_equal(again.calibrator_.scores_, model.calibrator_.scores_)
    assert check_config({"band": "field"})["band"] == "field"
    with pytest.raises(SctkError, match="band must be 'pixel'"):
        check_config({"band": "everywhere"})
