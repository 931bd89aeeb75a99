"""Training a tabular model (HybridRegressor) for a `uq.train` request: its parameters
checked, its dataset read (or, over the row budget, a stratified sample of it), split or
cross-calibrated, fitted and registered with its metrics and lineage."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.errors import SctkError
from sctk.uq.train_request import (
    METRICS_ALPHA,
    TrainRequest,
    calibration_of,
    finish,
    model_name,
)

CV_BELOW = 2000  # HybridRegressor's default cv_below
_NULLABLE_NUMERIC = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"}
_NULLABLE_NUMERIC |= {"Float32", "Float64"}


def config_keys() -> set[str]:
    """HybridRegressor's parameters (imported here: torch is slow to import)."""
    from sctk.uq.hybrid import HybridRegressor

    return set(inspect.signature(HybridRegressor).parameters)


def parse(params: dict[str, Any], dataset: str, config: dict[str, Any]) -> TrainRequest:
    """A tabular model's request from PARAMS (DATASET and CONFIG read already)."""
    target = params.get("target")
    if not isinstance(target, str) or not target:
        raise SctkError("uq.train needs 'target': the column to predict.")
    if params.get("input") is not None:
        raise SctkError(
            "'input' names the column of a field model's input fields; a tabular model takes "
            "'features' (or set kind = \"field\" in the config)."
        )
    features = params.get("features")
    if features is not None and (
        not isinstance(features, list)
        or not features
        or not all(isinstance(f, str) and f for f in features)
    ):
        raise SctkError("'features' must be a non-empty list of column names.")
    if features is not None and target in features:
        raise SctkError(f"The target '{target}' cannot also be a feature.")
    name = model_name(params, dataset, target)
    known = config_keys()
    bad = sorted(set(config) - known)
    if bad:
        raise SctkError(
            f"Unknown model setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}."
        )
    if config.get("physics") is not None:
        from sctk.uq import physics_registry

        # looked up, never imported as given: a name no registry holds, or one whose
        # package is missing or broken, is a sentence now
        config["physics"] = physics_registry.available(config["physics"])
    group = config.get("group_by")
    if group is not None and (
        isinstance(group, bool) or not isinstance(group, int | str) or group == ""
    ):
        raise SctkError("'group_by' must name a feature column (or give its index).")
    from sctk.uq import bounds

    bounds.check(config)
    calibration = calibration_of(params)
    return TrainRequest(dataset, target, features, name, config, calibration)


def _numeric(frame: pd.DataFrame, col: str) -> bool:
    return pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col])


def columns_for(req: TrainRequest, columns: dict[str, str]) -> list[str]:
    """The feature columns REQ uses on a dataset with COLUMNS (name -> dtype)."""

    if req.target not in columns:
        raise SctkError(
            f"Dataset '{req.dataset}' has no column '{req.target}'; its columns are "
            f"{', '.join(list(columns)[:20])}."
        )
    if req.features is None:
        features = [c for c, t in columns.items() if c != req.target and _numeric_dtype(t)]
        if not features:
            raise SctkError(f"Dataset '{req.dataset}' has no numeric column besides the target.")
        return features
    missing = [f for f in req.features if f not in columns]
    if missing:
        raise SctkError(f"Dataset '{req.dataset}' has no column(s) {', '.join(missing)}.")
    return list(req.features)


def _numeric_dtype(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "iuf"
    except TypeError:
        return dtype in _NULLABLE_NUMERIC


def check(session: Session, req: TrainRequest) -> None:
    """The datasets REQ names exist and hold its columns."""
    from sctk.pipeline import store

    columns_for(req, store.get(session, req.dataset).columns)
    if isinstance(req.calibration, str):
        store.get(session, req.calibration)


def _split(req: TrainRequest, frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n_cal = int(round(req.fraction * len(frame)))
    return frame.iloc[order[n_cal:]], frame.iloc[order[:n_cal]]


def train(
    session: Session,
    home: Path,
    req: TrainRequest,
    owner: str,
    progress=None,
    log_line=None,
    row_budget: int | None = None,
) -> dict[str, Any]:
    """Train and register the model REQ describes; the registry row as a dict.

    A dataset of more than ROW_BUDGET rows (default: uq.train_row_budget's) is trained on a
    seeded sample of that many rows, stratified on the target (sctk.uq.sampling)."""
    from sctk.pipeline import store

    ds = store.get(session, req.dataset)
    features = columns_for(req, ds.columns)
    frame, sample = _rows(home, ds, req, features, row_budget, progress, log_line)
    cal_ds, train_frame, cal_frame, cross = _calibration_rows(session, home, req, features, frame)
    config, group = _grouped_config(req, features)
    X, y, X_cal, y_cal = _arrays(req, features, train_frame, cal_frame, cross)
    model = _model(config)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        if progress is not None:
            progress(0.05 + 0.85 * epoch / epochs, f"epoch {epoch}/{epochs}, loss {loss:.4g}")

    if progress is not None:
        progress(0.05, f"training on {len(X)} rows, {len(features)} features")
    try:
        model.fit(X, y, X_cal=X_cal, y_cal=y_cal, callback=on_epoch)
    except (TypeError, ValueError) as exc:
        raise SctkError(f"The model settings are not usable: {exc}.") from None
    crashpoints.reached("train.fitted")
    scores = _scores(model, X, y, X_cal, y_cal, cross, sample)
    group_name = features[config["group_by"]] if group is not None else None
    lineage = _lineage(req, model, ds, cal_ds, sample, cross, features, group_name)
    return finish(session, home, req, model, scores, lineage, owner, progress, log_line)


def _grouped_config(req: TrainRequest, features: list[str]) -> tuple[dict[str, Any], Any]:
    """REQ's model settings with a grouping column named by its index among FEATURES, and
    the grouping as given (None: no grouping)."""
    config = dict(req.config)
    group = config.get("group_by")
    if isinstance(group, str):  # a column name: the model takes its index among the features
        if group not in features:
            raise SctkError(
                f"The grouping column '{group}' is not one of the model's features "
                f"({', '.join(features[:20])}); add it to the features."
            )
        config["group_by"] = features.index(group)
    return config, group


def _arrays(req: TrainRequest, features: list[str], train_frame, cal_frame, cross: bool):
    """(X, y, X_cal, y_cal): the training and calibration arrays (no calibration arrays
    under CV+), every target checked numeric."""
    from sctk.uq import tabular_inputs
    from sctk.uq.hybrid import as_target

    X = tabular_inputs.feature_matrix(train_frame, features, f"Dataset '{req.dataset}'")
    parts = ((f"Dataset '{req.dataset}'", train_frame),)
    if not cross:
        parts += (("The calibration set", cal_frame),)
    for what, fr in parts:
        if not _numeric(fr, req.target):
            raise SctkError(f"{what}: the target '{req.target}' is not numeric.")
    y = as_target(train_frame[req.target].to_numpy(dtype=np.float64), len(X), req.target)
    X_cal = y_cal = None
    if not cross:
        X_cal = tabular_inputs.feature_matrix(cal_frame, features, "The calibration set")
        y_cal = as_target(cal_frame[req.target].to_numpy(dtype=np.float64), len(X_cal), req.target)
    return X, y, X_cal, y_cal


def _model(config: dict[str, Any]):
    """An unfitted HybridRegressor of CONFIG (TOML's lists made the tuples it takes)."""
    from sctk.uq.hybrid import HybridRegressor

    try:
        if "hidden" in config:
            config["hidden"] = tuple(config["hidden"])
        if "alpha_bounds" in config:
            config["alpha_bounds"] = tuple(config["alpha_bounds"])
        return HybridRegressor(**config)
    except (TypeError, ValueError) as exc:
        raise SctkError(f"The model settings are not usable: {exc}.") from None


def _calibration_rows(session: Session, home: Path, req: TrainRequest, features, frame):
    """(calibration dataset or None, training rows, calibration rows, CV+?): a dataset named
    for calibration, else a held-out share of FRAME, or under cv_below rows CV+ over all."""
    from sctk.pipeline import store
    from sctk.uq.conformal import min_points

    cal_ds = None
    if isinstance(req.calibration, str):
        cal_ds = store.get(session, req.calibration)
        train_frame, cal_frame = frame, store.read(home, cal_ds)
        for col in [*features, req.target]:
            if col not in cal_frame.columns:
                raise SctkError(
                    f"The calibration dataset '{cal_ds.name}' has no column '{col}'; it needs "
                    "the training dataset's feature and target columns."
                )
    else:
        train_frame, cal_frame = _split(req, frame, int(req.config.get("seed", 0)))
    # small data: no rows spent on calibration alone, CV+ over folds of all of them
    cross = req.calibration is None and len(frame) < int(req.config.get("cv_below", CV_BELOW))
    if cross:
        train_frame, cal_frame = frame, frame.iloc[:0]
    need = min_points(METRICS_ALPHA)
    if cross and len(frame) < need:
        raise SctkError(
            f"Dataset '{req.dataset}' has {len(frame)} rows, too few for intervals at alpha "
            f"{METRICS_ALPHA}: it needs at least {need}; give more rows."
        )
    if not cross and len(cal_frame) < need:
        raise SctkError(
            f"The calibration set has {len(cal_frame)} rows, too few for intervals at alpha "
            f"{METRICS_ALPHA}: it needs at least {need}; use a larger fraction or dataset."
        )
    return cal_ds, train_frame, cal_frame, cross


def _scores(model, X, y, X_cal, y_cal, cross: bool, sample) -> dict[str, Any]:
    """The new model's metrics: on its calibration rows, or cross-conformal under CV+."""
    from sctk.uq import metrics

    if cross:  # each row's interval from the folds that did not see it (cross-conformal)
        y_m, lower, upper = (y, *model.cross_intervals(METRICS_ALPHA))
    else:
        out = model.predict_interval(X_cal, alpha=METRICS_ALPHA)
        y_m, lower, upper = y_cal, out["lower"], out["upper"]
    scores = {
        "alpha": METRICS_ALPHA,
        "coverage": metrics.coverage(y_m, lower, upper),
        "mean_width": metrics.mean_width(lower, upper),
        "interval_score": metrics.interval_score(y_m, lower, upper, METRICS_ALPHA),
        "n_train": int(len(X)),
        **({"n_dataset": sample.rows} if sample else {}),
        "n_calibration": int(len(y_m)),
        "measured_on": "cross-validation" if cross else "calibration",
        "epochs_run": len(model.history_),
        "method": model.method_,
        "calibration_mode": model.mode_,
        "selection": model.selection_,
    }
    return scores


def _lineage(req, model, ds, cal_ds, sample, cross: bool, features, group_name):
    """Where the new model came from: its data (and sample), calibration, columns, versions."""
    from sctk import __version__
    from sctk.pipeline import store

    return {
        "dataset": {
            "name": ds.name,
            "sha256": ds.sha256,
            **({"sample": sample.to_dict()} if sample is not None else {}),
        },
        "calibration": (
            {"dataset": cal_ds.name, "sha256": cal_ds.sha256}
            if cal_ds is not None
            else {"cv_plus": True, "folds": len(model.folds_), "seed": int(model.seed)}
            if cross
            else {"fraction": req.fraction, "seed": int(model.seed)}
        ),
        "features": features,
        "target": req.target,
        **({"group": group_name} if group_name is not None else {}),
        "versions": {**store.versions(), "sctk": __version__, "torch": _torch_version()},
    }


def _rows(home: Path, ds, req: TrainRequest, features, row_budget, progress, log_line):
    """The rows to train on and, over the row budget, the sample they are (else None)."""
    from sctk.pipeline import store

    budget = row_budget or _default_budget()
    if ds.rows <= budget:
        return store.read(home, ds), None
    from sctk.uq import sampling

    if progress is not None:
        progress(0.01, f"sampling {budget:,} of {ds.rows:,} rows")
    sample = sampling.stratified(
        lambda cols: store.iter_frames(home, ds, columns=cols),
        list(dict.fromkeys([*features, req.target])),
        req.target,
        budget,
        int(req.config.get("seed", 0)),
    )
    if log_line is not None:
        log_line(sample.sentence())
    return sample.frame, sample


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _default_budget() -> int:
    from sctk.config import UqSettings

    return UqSettings().train_row_budget
