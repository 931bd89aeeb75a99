"""Interval bounds moved to the values a discrete target takes (sctk.uq.support), and the
automatic choice that keeps the move only where validation rows score better with it."""

from __future__ import annotations

import numpy as np
import pytest

from sctk.uq import metrics, tabular_kind
from sctk.uq.hybrid import HybridRegressor
from sctk.uq.support import UNSEEN, Support

QUICK = {"epochs": 5, "hidden": (16,), "patience": 3, "boost": {"max_iter": 30}}


def test_whole_number_targets_move_each_bound_to_the_nearest_whole_number_in_range():
    support = Support.of(np.array([0.0, 1, 2, 5, 5]))
    assert support is not None and support.values is None
    lower, upper = support.snap(
        np.array([-1.2, 0.4, 0.6, 2.5, 5.5]), np.array([0.2, 1.4, 1.6, 2.6, 6.0])
    )
    # below the least training target up to it; a tie inward; wholly above the range: kept
    assert lower.tolist() == [0.0, 0.0, 1.0, 3.0, 5.5]
    assert upper.tolist() == [0.0, 1.0, 2.0, 3.0, 6.0]


def test_few_distinct_values_are_a_support_and_many_are_not():
    y = np.repeat([0.0, 0.25, 2.5, 3.75], 50)
    support = Support.of(y)
    assert support is not None and support.values.tolist() == [0.0, 0.25, 2.5, 3.75]
    lower, upper = support.snap(np.array([0.1, 1.0]), np.array([0.2, 3.5]))
    assert lower.tolist() == [0.0, 0.25] and upper.tolist() == [0.25, 3.75]
    rng = np.random.default_rng(0)
    assert Support.of(rng.normal(size=500)) is None  # every value seen once
    # singletons just past the Good-Turing limit: not a support
    rare = int(UNSEEN * 1000) + 1
    assert (
        Support.of(
            np.concatenate([np.repeat([0.5, 1.5], 500 - rare), 10 + np.arange(2 * rare) * 0.1])
        )
        is None
    )


def test_moved_bounds_never_cover_fewer_targets_of_the_support():
    rng = np.random.default_rng(4)
    y = rng.poisson(3.0, 5000).astype(float)
    support = Support.of(y)
    lower = rng.uniform(-2, 6, 5000)
    upper = lower + rng.uniform(0, 6, 5000)
    a, b = support.snap(lower, upper)
    before = (y >= lower) & (y <= upper)
    after = (y >= a) & (y <= b)
    assert np.all(after[before])  # every target covered before still is
    assert np.all(a <= b)
    inside = (lower >= y.min()) & (upper <= y.max())
    assert np.all(a[inside] == np.round(a[inside])) and np.all(b[inside] == np.round(b[inside]))
    assert np.all(np.abs(a[inside] - lower[inside]) <= 0.5)


def counts(rng, n):
    """A count whose mean is learnable: a whole number near 3 + 2 x0, often off by one."""
    X = rng.uniform(-1, 1, (n, 3))
    y = np.round(3 + 2 * X[:, 0]) + rng.choice([-1.0, 0.0, 1.0], n, p=[0.15, 0.7, 0.15])
    return X, y


def test_auto_keeps_the_move_where_validation_says_so_and_model_files_keep_it():
    rng = np.random.default_rng(5)
    X, y = counts(rng, 4000)
    model = HybridRegressor(seed=0, **QUICK).fit(X[:2000], y[:2000], X[2000:2500], y[2000:2500])
    sel = model.selection_
    assert set(sel["snapped"]) == set(sel["candidates"])
    assert sel["snap"] is True and model.support_ is not None
    assert sel["snapped"][model.method_] < sel["candidates"][model.method_]
    out = model.predict_interval(X[2500:])
    assert np.all(out["lower"] == np.round(out["lower"]))
    assert np.all(out["upper"] == np.round(out["upper"]))
    # against the same model's bounds not moved: coverage no lower, interval score better
    raw = model.calibrator_.interval(
        *(model._outputs(X[2500:], False)[k] for k in ("centre", "spread")), 0.1
    )
    y_test = y[2500:]
    assert metrics.coverage(y_test, out["lower"], out["upper"]) >= metrics.coverage(y_test, *raw)
    assert metrics.interval_score(y_test, out["lower"], out["upper"], 0.1) < metrics.interval_score(
        y_test, *raw, 0.1
    )
    back = tabular_kind.model_from_state(tabular_kind.model_state(model))
    again = back.predict_interval(X[2500:])
    assert np.array_equal(again["lower"], out["lower"]) and np.array_equal(
        again["upper"], out["upper"]
    )


def test_the_tree_sizes_are_judged_with_the_bounds_moved_where_moving_wins():
    rng = np.random.default_rng(5)
    X, y = counts(rng, 4000)
    model = HybridRegressor(seed=0, **QUICK).fit(X[:2000], y[:2000], X[2000:2500], y[2000:2500])
    sel = model.selection_
    # moving wins here at every size (as it does for the method chosen), so each size was
    # judged by its moved bounds: the chosen size's score is the sided CQR's moved one
    assert sel["leaf_moved"] == [7, 31]
    assert sel["leaf_scores"][str(sel["leaves"])] == pytest.approx(sel["snapped"]["hgb-cqr-sided"])
    assert sel["leaf_scores"][str(sel["leaves"])] < sel["candidates"]["hgb-cqr-sided"]
    # a continuous target: no size moved, none recorded
    smooth = HybridRegressor(seed=0, **QUICK).fit(X[:2000], X[:2000, 0] + rng.normal(0, 0.3, 2000))
    assert "leaf_moved" not in smooth.selection_ and "leaf_scores" in smooth.selection_


def test_cv_plus_auto_scores_the_move_too():
    rng = np.random.default_rng(6)
    X, y = counts(rng, 900)
    model = HybridRegressor(seed=0, **QUICK).fit(X[:600], y[:600])
    assert model.mode_ == "cv+"
    sel = model.selection_
    assert set(sel["snapped"]) == set(sel["candidates"])
    assert (model.support_ is not None) == sel["snap"]
    lower, upper = model.cross_intervals(0.1)  # the metrics of a job: moved as predictions are
    if sel["snap"]:
        assert np.all(lower == np.round(lower)) and np.all(upper == np.round(upper))


@pytest.mark.parametrize("method", ["hgb-cqr-sided", "hgb-plain"])
def test_a_given_method_never_moves_bounds_and_a_continuous_target_records_nothing(method):
    rng = np.random.default_rng(7)
    X, y = counts(rng, 1500)
    given = HybridRegressor(method=method, seed=0, **QUICK).fit(
        X[:1000], y[:1000], X[1000:1300], y[1000:1300]
    )
    assert given.support_ is None and "snap" not in given.selection_
    smooth = HybridRegressor(method="auto", seed=0, **QUICK)
    smooth.fit(X[:1000], y[:1000] + rng.normal(0, 0.3, 1000), X[1000:1300], y[1000:1300])
    assert smooth.support_ is None and "snapped" not in smooth.selection_


def test_the_choice_to_move_bounds_never_sees_the_calibration_rows():
    rng = np.random.default_rng(8)
    X, y = counts(rng, 1800)
    poison = np.round(rng.normal(0, 50, 300)) + 0.5  # off the support too
    kw = {"seed": 0, **QUICK}
    clean = HybridRegressor(**kw).fit(X[:1000], y[:1000], X[1000:1300], y[1000:1300])
    dirty = HybridRegressor(**kw).fit(X[:1000], y[:1000], X[1000:1300], y[1000:1300] + poison)
    assert "snapped" in clean.selection_ and dirty.selection_ == clean.selection_
    assert dirty.support_ == clean.support_


def test_models_show_says_whether_the_bounds_were_moved():
    from sctk.cli.uq import _method_lines

    sel = {"reason": "auto", "alpha": 0.1, "validation_rows": 300}
    sel["candidates"] = {"hgb-cqr": 2.5, "hgb-plain": 3.0}
    moved = {**sel, "snap": True, "snapped": {"hgb-cqr": 2.25, "hgb-plain": 3.1}}
    kept = {**sel, "snap": False, "snapped": {"hgb-cqr": 2.75, "hgb-plain": 3.1}}
    lines = _method_lines({"method": "hgb-cqr", "selection": moved})
    assert lines[-1] == "bounds moved to the nearest value the target takes (scored 2.25)"
    lines = _method_lines({"method": "hgb-cqr", "selection": kept})
    assert lines[-1].startswith("bounds kept as calibrated") and "2.75" in lines[-1]
    assert "bounds" not in _method_lines({"method": "hgb-cqr", "selection": sel})[-1]
