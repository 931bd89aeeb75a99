"""The residual learners, conformity scores and calibrations of HybridRegressor: the automatic
choice, CV+ on small data, Mondrian groups, and model files of both forms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from sctk.errors import SctkError
from sctk.uq import metrics, tabular_kind
from sctk.uq.hybrid import CHALLENGER_FLOOR, HybridRegressor, _choose
from sctk.uq.trees import BOOST_DEFAULTS, TreeEnsemble
from tests.uq.registry_helpers import import_csv
from tests.uq.test_uq_cli import _ok

QUICK = {"epochs": 5, "hidden": (16,), "patience": 3, "boost": {"max_iter": 30}}


def heteroscedastic(rng, n):
    X = rng.uniform(-3, 3, (n, 2))
    return X, np.sin(X[:, 0]) + 0.3 * X[:, 1] + rng.normal(0, 0.1 + 0.5 * np.abs(X[:, 0]))


def width(model, X) -> float:
    out = model.predict_interval(X, alpha=0.1)
    return float(np.mean(out["upper"] - out["lower"]))


def test_the_automatic_choice_never_sees_the_calibration_rows():
    rng = np.random.default_rng(3)
    X, y = heteroscedastic(rng, 1500)
    train, cal = slice(0, 1000), slice(1000, 1300)
    poison = rng.normal(0, 50, 300)  # calibration targets wrecked: a choice seeing them moves
    kw = {"seed": 0, **QUICK}
    clean = HybridRegressor(**kw).fit(X[train], y[train], X[cal], y[cal])
    dirty = HybridRegressor(**kw).fit(X[train], y[train], X[cal], y[cal] + poison)
    sel = clean.selection_
    assert sel["reason"] == "auto" and sel["chosen"] == clean.method_
    assert set(sel["candidates"]) == {
        *("hgb-cqr", "hgb-cqr-sided", "hgb-normalised", "hgb-plain"),
        *("mlp-normalised", "mlp-plain"),
    }
    assert sel["folds"] == 3  # the default while the network is a candidate: 3 folds
    assert sel["validation_rows"] == 1000  # the training rows, each scored once
    assert sel["fit_rows"] == 666  # two folds of three
    assert dirty.selection_ == sel  # every candidate's score, to the last digit
    # the poison reached what it should: the calibration, so the intervals widened
    assert width(dirty, X[1300:]) > 5 * width(clean, X[1300:])
    # and the same poison in the training rows does move the choice's scores
    y_bad = y[train].copy()
    y_bad[:300] += poison
    moved = HybridRegressor(**kw).fit(X[train], y_bad, X[cal], y[cal])
    assert moved.selection_["candidates"] != sel["candidates"]


def test_the_choice_over_folds_validates_every_training_row_and_trees_alone_on_one_share():
    rng = np.random.default_rng(5)
    X, y = heteroscedastic(rng, 800)
    fit = (X[:600], y[:600], X[600:], y[600:])
    folded = HybridRegressor(seed=0, select_folds=3, **QUICK).fit(*fit).selection_
    assert folded["folds"] == 3 and (folded["validation_rows"], folded["fit_rows"]) == (600, 400)
    assert folded["floor"] == 0.0  # K fits judge each learner: no floor on top
    assert {"mlp-normalised", "mlp-plain"} <= set(folded["candidates"])
    # past mlp_rows only trees are candidates: one held-out share (the fit-time budget)
    trees = HybridRegressor(seed=0, select_folds=3, mlp_rows=300, **QUICK).fit(*fit).selection_
    assert trees["folds"] == 1 and (trees["validation_rows"], trees["fit_rows"]) == (150, 450)
    assert trees["floor"] == CHALLENGER_FLOOR  # one fit of each on one share: the floor
    assert not any(m.startswith("mlp") for m in trees["candidates"])
    # one held-out share, the network still a candidate
    one = HybridRegressor(seed=0, select_folds=1, **QUICK).fit(*fit).selection_
    assert one["folds"] == 1 and one["validation_rows"] == 150
    assert "mlp-normalised" in one["candidates"]
    assert one["candidates"] != folded["candidates"]
    with pytest.raises(SctkError, match="select_folds must be a whole number from 1 to 10"):
        HybridRegressor(select_folds=0).fit(*fit)


def test_a_challenger_within_the_floor_keeps_the_sided_cqr_and_a_moved_bound_needs_no_floor():
    rng = np.random.default_rng(7)
    base = rng.gamma(2.0, 1.0, 4000)  # the sided CQR's validation rows' interval scores
    noise = rng.normal(0, 0.01, base.size)  # paired differences tight: many standard errors

    def rows(mlp_gain, moved_gain):
        return {
            ("hgb-cqr-sided", False): base,
            ("hgb-cqr-sided", True): base * (1 - moved_gain) + noise,
            ("mlp-normalised", False): base * (1 - mlp_gain) + noise,
            ("hgb-plain", False): base * 1.2 + noise,
        }

    floor = CHALLENGER_FLOOR
    # the network 3% better, far past one standard error: within the floor, the trees stay
    assert _choose(rows(0.03, 0.0), "hgb-cqr-sided", floor) == ("hgb-cqr-sided", False)
    # without the floor (the CV+ choice) the same rows go to the network
    assert _choose(rows(0.03, 0.0), "hgb-cqr-sided") == ("mlp-normalised", False)
    # 8% better: past the floor, the network wins
    assert _choose(rows(0.08, 0.0), "hgb-cqr-sided", floor) == ("mlp-normalised", False)
    # the sided CQR with its bounds moved to the target's values, 1% better: the same method,
    # so the standard error alone decides, and the floor is measured from the moved bounds
    assert _choose(rows(0.0, 0.01), "hgb-cqr-sided", floor) == ("hgb-cqr-sided", True)
    assert _choose(rows(0.05, 0.01), "hgb-cqr-sided", floor) == ("hgb-cqr-sided", True)
    # a gain past the floor but within one standard error of a noisy difference: no switch
    loud = rows(0.08, 0.0)
    loud[("mlp-normalised", False)] = base * 0.92 + rng.normal(0, 20.0, base.size)
    assert _choose(loud, "hgb-cqr-sided", floor) == ("hgb-cqr-sided", False)


def test_the_held_out_choice_records_the_floor_it_applied():
    rng = np.random.default_rng(5)
    X, y = heteroscedastic(rng, 800)
    model = HybridRegressor(seed=0, select_folds=1, **QUICK)
    sel = model.fit(X[:600], y[:600], X[600:], y[600:]).selection_
    assert (sel["preferred"], sel["floor"]) == ("hgb-cqr-sided", CHALLENGER_FLOOR)
    preferred = sel["candidates"]["hgb-cqr-sided"]
    if sel["chosen"] != "hgb-cqr-sided":  # a switch only past the floor
        assert sel["candidates"][sel["chosen"]] < (1 - CHALLENGER_FLOOR) * preferred
    # `uq models show` says what the bar was, next to each candidate's score
    from sctk.cli.uq import _method_lines

    lines = _method_lines({"method": sel["chosen"], "selection": sel})
    assert any(line.endswith("<- chosen") for line in lines)
    assert (
        "another method replaces hgb-cqr-sided only when better by more than 5% and one "
        "standard error"
    ) in lines


def test_cv_plus_covers_over_50_seeded_small_problems():
    covered = []
    for seed in range(50):
        rng = np.random.default_rng(seed)
        X, y = heteroscedastic(rng, 400)
        model = HybridRegressor(method="hgb-plain", seed=seed, boost={"max_iter": 20})
        model.fit(X[:150], y[:150])  # 150 rows < cv_below: CV+ over 5 folds, no split
        assert model.mode_ == "cv+" and len(model.folds_) == 5
        out = model.predict_interval(X[150:], alpha=0.1)
        covered.append(metrics.coverage(y[150:], out["lower"], out["upper"]))
    assert 0.87 <= np.mean(covered) <= 0.95, np.mean(covered)


def test_sided_cv_plus_covers_over_30_seeded_small_skewed_problems():
    covered = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        X = rng.uniform(-2, 2, (400, 2))
        y = np.exp(0.5 * X[:, 0] + rng.normal(0, 0.6, 400))  # skewed: the sides miss apart
        model = HybridRegressor(method="hgb-cqr-sided", seed=seed, boost={"max_iter": 20})
        model.fit(X[:150], y[:150])
        assert model.mode_ == "cv+" and len(model.folds_) == 5
        out = model.predict_interval(X[150:], alpha=0.1)
        assert np.all(out["lower"] <= out["upper"])
        covered.append(metrics.coverage(y[150:], out["lower"], out["upper"]))
    assert 0.87 <= np.mean(covered) <= 0.95, np.mean(covered)


def test_crossing_quantiles_are_rearranged_not_clipped():
    rng = np.random.default_rng(7)
    X = rng.uniform(-2, 2, (900, 2))
    y = np.exp(0.5 * X[:, 0] + rng.normal(0, 0.6, 900))
    model = HybridRegressor(method="hgb-cqr-sided", seed=0, boost={"max_iter": 20})
    model.fit(X[:600], y[:600], X[600:750], y[600:750])
    test = X[750:]
    lo, hi = (model.trees_[k].predict(test) for k in ("lo", "hi"))
    # the two quantile learners swapped: every row's pair crosses (lo above hi)
    model.trees_["lo"], model.trees_["hi"] = model.trees_["hi"], model.trees_["lo"]
    out = model._outputs(test, with_psi=False)
    assert np.all(out["spread"] > 0)  # a clipped spread would be 0 on every row
    # the band is the pair sorted: the lower order statistic below, the upper one above
    band = (out["centre"] - out["spread"], out["centre"] + out["spread"])
    np.testing.assert_allclose(band[0], np.minimum(lo, hi), atol=1e-12)
    np.testing.assert_allclose(band[1], np.maximum(lo, hi), atol=1e-12)
    # so the same model's rows give the same band with or without the swap
    model.trees_["lo"], model.trees_["hi"] = model.trees_["hi"], model.trees_["lo"]
    again = model._outputs(test, with_psi=False)
    np.testing.assert_allclose(again["centre"] - again["spread"], band[0], atol=1e-12)
    np.testing.assert_allclose(again["centre"] + again["spread"], band[1], atol=1e-12)
    interval = model.predict_interval(test, alpha=0.1)
    assert np.all(interval["lower"] <= interval["upper"])


def test_sided_cqr_under_cv_plus_by_groups_is_refused():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(-2, 2, 200), rng.integers(0, 2, 200)])
    model = HybridRegressor(method="hgb-cqr-sided", group_by=1, boost={"max_iter": 10})
    with pytest.raises(SctkError, match="no per-group calibration"):
        model.fit(X, X[:, 0] + rng.normal(size=200))


def test_mondrian_calibration_holds_coverage_in_each_group():
    rng = np.random.default_rng(8)
    n = 6000
    group = rng.integers(0, 2, n)
    X = np.column_stack([rng.uniform(-2, 2, n), group])
    y = np.sin(X[:, 0]) + rng.normal(0, np.where(group == 1, 1.5, 0.2))
    fit, cal, test = slice(0, 3000), slice(3000, 4500), slice(4500, None)
    by_group = HybridRegressor(method="hgb-plain", group_by=1, **QUICK)
    pooled = HybridRegressor(method="hgb-plain", **QUICK)
    for model in (by_group, pooled):
        model.fit(X[fit], y[fit], X[cal], y[cal])
    for model, lo, hi in ((by_group, 0.86, 0.94), (pooled, 0.0, 1.0)):
        out = model.predict_interval(X[test], alpha=0.1)
        for g in (0, 1):
            rows = X[test][:, 1] == g
            cov = metrics.coverage(y[test][rows], out["lower"][rows], out["upper"][rows])
            if model is pooled:  # one width for both: the noisy group is under-covered
                assert (cov < 0.85) if g == 1 else (cov > 0.97), (g, cov)
            else:
                assert lo <= cov <= hi, (g, cov)


def test_boosted_trees_kept_as_arrays_predict_as_the_booster_did():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(800, 4))
    y = X[:, 0] ** 2 + rng.normal(size=800)
    with threadpool_limits(1, "openmp"):  # as TreeEnsemble fits: all cores only contend
        booster = HistGradientBoostingRegressor(random_state=0, **BOOST_DEFAULTS).fit(X, y)
    trees = TreeEnsemble.fit(X, y, "squared_error", None, seed=0)
    again = TreeEnsemble.from_state(trees.state())
    assert np.array_equal(trees.predict(X), booster.predict(X))
    assert np.array_equal(again.predict(X), booster.predict(X))


@pytest.mark.parametrize("leaves", [31, 100])  # 100: past the tables' 64 leaves, the walker
def test_boosted_trees_predict_missing_values_as_the_booster_did(leaves):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1500, 3))
    X[:, 2] = rng.integers(0, 4, 1500)  # a few distinct values: ties with the thresholds
    y = X[:, 0] + np.where(np.isnan(X[:, 1]), 2.0, X[:, 1]) + rng.normal(size=1500)
    X[rng.random(1500) < 0.2, 1] = np.nan  # learnt missing-value directions
    params = {**BOOST_DEFAULTS, "max_leaf_nodes": leaves, "min_samples_leaf": 5}
    with threadpool_limits(1, "openmp"):
        booster = HistGradientBoostingRegressor(random_state=0, **params).fit(X, y)
    trees = TreeEnsemble.fit(X, y, "squared_error", None, seed=0, **params)
    rows = rng.normal(size=(3000, 3))
    rows[:, 2] = rng.integers(0, 4, 3000)
    rows[::3, 1] = np.nan
    rows[::7, 0] = np.nan  # missing where training had none
    for Z in (X, rows):
        assert np.array_equal(trees.predict(Z), booster.predict(Z))
        assert np.array_equal(trees.predict(Z), trees._walk(Z))
    assert (trees._tables is False) == (leaves > 64), trees._tables  # which path ran


@pytest.mark.parametrize(
    ("params", "calibrated"),
    [
        ({"method": "hgb-cqr", "group_by": 2}, True),
        ({"method": "hgb-cqr-sided", "group_by": 2}, True),
        ({"method": "hgb-normalised"}, False),  # CV+
        ({"method": "hgb-cqr-sided"}, False),  # CV+, each side on its own
        ({"method": "mlp-plain"}, False),  # CV+ of networks
    ],
)
def test_model_files_round_trip_every_method(params, calibrated):
    rng = np.random.default_rng(4)
    X, y = heteroscedastic(rng, 600)
    X = np.column_stack([X, rng.integers(0, 3, 600)])
    model = HybridRegressor(seed=1, **{**QUICK, **params})
    model.fit(X[:400], y[:400], *((X[400:500], y[400:500]) if calibrated else ()))
    back = tabular_kind.model_from_state(tabular_kind.model_state(model))
    a, b = model.predict_interval(X[500:]), back.predict_interval(X[500:])
    for key in ("mean", "lower", "upper", "sigma", "psi"):
        assert np.array_equal(a[key], b[key]), key
    assert back.selection_ == model.selection_ and back.mode_ == model.mode_


def test_a_model_file_of_the_first_form_still_loads():
    """Saved before `method`: an MLP, split-calibrated, its calibrator a `normalized` flag."""
    rng = np.random.default_rng(6)
    X, y = heteroscedastic(rng, 300)
    model = HybridRegressor(method="mlp-normalised", **QUICK)
    model.fit(X[:200], y[:200], X[200:], y[200:])
    state = tabular_kind.model_state(model)
    for key in ("method", "mode", "selection"):
        state.pop(key)
    state["calibrator"] = {"normalized": True, "scores": state["calibrator"]["scores"]}
    new = ("method", "quantile_alpha", "cv_below", "cv_folds", "group_by", "mlp_rows")
    new += ("select_fraction", "select_folds", "boost")
    state["params"] = {k: v for k, v in state["params"].items() if k not in new}
    old = tabular_kind.model_from_state(state)
    assert old.method_ == "mlp-normalised" and old.mode_ == "split"
    a, b = model.predict_interval(X[:50]), old.predict_interval(X[:50])
    for key in ("mean", "lower", "upper", "psi"):
        assert np.array_equal(a[key], b[key]), key


def test_train_show_and_evaluate_per_group(settings, tmp_path, sctk_here):
    home = settings.home
    rng = np.random.default_rng(2)
    n = 600
    site = rng.integers(0, 3, n)
    a = rng.uniform(-2, 2, n)
    df = pd.DataFrame({"a": a, "site": site, "y": np.sin(a) + rng.normal(0, 0.1 + 0.4 * site)})
    import_csv(settings, df.iloc[:400], "plots")
    import_csv(settings, df.iloc[400:], "plots_later")
    config = tmp_path / "m.toml"
    config.write_text('epochs = 3\nhidden = [8]\ngroup_by = "site"\n[boost]\nmax_iter = 20\n')
    trained = json.loads(
        _ok(
            sctk_here(
                *("uq", "train", "--data", "plots", "--target", "y", "--config", str(config)),
                *("--name", "plots", "--inline", "--json"),
                home=home,
            )
        )
    )
    m = trained["metrics"]
    assert m["calibration_mode"] == "cv+" and m["n_calibration"] == 400
    assert m["method"] == m["selection"]["chosen"] and len(m["selection"]["candidates"]) == 5
    assert trained["lineage"]["group"] == "site" and trained["config"]["group_by"] == 1
    shown = _ok(sctk_here("uq", "models", "show", "plots", home=home))
    assert "chosen automatically by CV+ over all 400 rows" in shown
    assert f"{m['method']}" in shown and "<- chosen" in shown
    result = json.loads(
        _ok(sctk_here("uq", "evaluate", "plots", "--data", "plots_later", "--json", home=home))
    )
    groups = {g["group"]: g for g in result["coverage_by_group"]}
    assert set(groups) == {"0", "1", "2"} and sum(g["n"] for g in groups.values()) == 200
    assert len(result["coverage_by_width_decile"]) == 10
    text = _ok(sctk_here("uq", "evaluate", "plots", "--data", "plots_later", home=home))
    assert "coverage in site = 0" in text and "decile of interval width" in text


def _tree_leaves(model) -> int:
    """The most leaves any tree of MODEL's boosted learners has."""
    return max(
        int(np.count_nonzero(nodes["is_leaf"]))
        for trees in model.trees_.values()
        for nodes in trees.nodes
    )


def test_auto_grows_larger_trees_only_where_the_validation_rows_need_them():
    rng = np.random.default_rng(11)
    X = rng.uniform(-1, 1, (6000, 4))
    noise = rng.normal(0, 0.3, 6000)
    fit = {"seed": 0, "mlp_rows": 1000}  # trees alone: the choice on one held-out share
    # a surface of many bumps: small trees need more rounds than they get to follow it
    rough = 2 * np.sin(6 * X[:, 0]) * np.cos(6 * X[:, 1]) + noise
    model = HybridRegressor(**fit).fit(X[:4000], rough[:4000], X[4000:], rough[4000:])
    sel = model.selection_
    assert sel["leaves"] == 31 and _tree_leaves(model) > 7
    assert sel["leaf_scores"]["31"] < sel["leaf_scores"]["7"]
    # trees alone: scikit-learn's 31 leaves is the size 7 must beat
    assert sel["leaf_default"] == 31
    # a straight line while the network is a candidate: the default small trees are kept
    line = X[:, 0] + noise
    quick = {"epochs": 5, "hidden": (16,), "patience": 3}
    model = HybridRegressor(seed=0, **quick).fit(X[:1500], line[:1500], X[4000:], line[4000:])
    assert model.selection_["leaf_default"] == 7
    assert model.selection_["leaves"] == 7 and _tree_leaves(model) <= 7
    # leaves the user set are used as given, with no choice
    given = HybridRegressor(**fit, boost={"max_leaf_nodes": 4})
    given.fit(X[:4000], rough[:4000], X[4000:], rough[4000:])
    assert "leaves" not in given.selection_ and _tree_leaves(given) <= 4


def test_models_show_says_which_trees_the_choice_grew():
    from sctk.cli.uq import _method_lines

    sel = {"reason": "auto", "alpha": 0.1, "validation_rows": 300, "leaves": 31}
    sel |= {"candidates": {"hgb-cqr-sided": 2.5}, "leaf_scores": {"7": 2.75, "31": 2.5}}
    lines = _method_lines({"method": "hgb-cqr-sided", "selection": sel})
    assert lines[-1] == "trees of 31 leaves (the sided CQR scored 7 leaves 2.75, 31 leaves 2.5)"
    sel |= {"leaf_moved": [31]}  # a discrete target's size judged with its bounds moved
    lines = _method_lines({"method": "hgb-cqr-sided", "selection": sel})
    assert lines[-1].endswith("7 leaves 2.75, 31 leaves 2.5 (bounds moved))")
    sel |= {"leaf_default": 31}  # the size the other had to beat (trees alone)
    lines = _method_lines({"method": "hgb-cqr-sided", "selection": sel})
    assert lines[-1].startswith("trees of 31 leaves, starting from 31 (the sided CQR scored")


def test_the_choices_validation_fits_leave_out_the_mean_tree_and_score_alike():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (1500, 3))
    y = X[:, 0] + rng.normal(0, 0.2 + 0.3 * np.abs(X[:, 1]), 1500)
    full, band = (HybridRegressor(seed=0, method="hgb-cqr-sided") for _ in range(2))
    for model, band_only in ((full, False), (band, True)):
        model.physics_fn_, model.n_features_in_, model.method_ = None, 3, "hgb-cqr-sided"
        model._fit_learner(X[:1000], y[:1000], band_only=band_only)
    assert set(full.trees_) == {"mean", "lo", "hi"} and set(band.trees_) == {"lo", "hi"}
    a, b = full._outputs(X[1000:], False), band._outputs(X[1000:], False)
    assert np.array_equal(a["centre"], b["centre"]) and np.array_equal(a["spread"], b["spread"])
