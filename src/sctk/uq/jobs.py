"""The `uq.train` job kind: fit a HybridRegressor on a stored dataset and register it.

Parameters (JSON)::

    {"dataset": "runs",            # a stored dataset
     "target": "y",                # its target column
     "features": ["a", "b"],       # optional; default: every other numeric column
     "name": "drag",               # optional model name; default: DATASET-TARGET
     "config": {"epochs": 50},     # optional HybridRegressor parameters
     "calibration": 0.25}          # a fraction held out of DATASET, or a dataset's name;
                                   # absent: CV+ below cv_below rows, else 0.25

The model is recorded as the model of whoever submitted the job (ctx.owner).

A field model (FieldHybridRegressor, sctk.uq.field_training) is asked for with
`"config": {"kind": "field", ...}`: DATASET then holds one input field per row in the column
'input' (default "x") and its target field in TARGET (default "y"); 'features' does not apply.

The model's metrics (coverage, mean width, interval score at alpha 0.1) are measured on the
calibration split; with no 'calibration' given and fewer rows than `cv_below` (default 2,000)
every row trains and calibrates by CV+ (more rows: 0.25 of them held out), and the metrics
are cross-conformal (each row's interval from the fold model that did not see it). They
also record the method the model uses, and for `method = "auto"` every candidate's
validation interval score. A config's `group_by` may name a feature column (Mondrian
calibration per value of that column).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.errors import SctkError
from sctk.jobs.kinds import JobContext, job_kind

KIND = "uq.train"
METRICS_ALPHA = 0.1
CV_BELOW = 2000  # HybridRegressor's default cv_below
DEFAULT_FRACTION = 0.25  # held out when no calibration is given and CV+ does not apply
_KEYS = {"dataset", "target", "input", "features", "name", "config", "calibration"}
KINDS = ("tabular", "field")
_NULLABLE_NUMERIC = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"}
_NULLABLE_NUMERIC |= {"Float32", "Float64"}


def config_keys() -> set[str]:
    """HybridRegressor's parameters (imported here: torch is slow to import)."""
    from sctk.uq.hybrid import HybridRegressor

    return set(inspect.signature(HybridRegressor).parameters)


@dataclass
class TrainRequest:
    dataset: str
    target: str
    features: list[str] | None
    name: str
    config: dict[str, Any]  # the estimator's parameters, without 'kind'
    calibration: float | str | None  # None: CV+ below cv_below rows, else DEFAULT_FRACTION
    kind: str = "tabular"
    input: str | None = None  # field models: the column of the input fields

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "dataset": self.dataset,
            "target": self.target,
            "name": self.name,
            "config": self.config if self.kind == "tabular" else {"kind": self.kind, **self.config},
        }
        if self.calibration is not None:
            params["calibration"] = self.calibration
        if self.features is not None:
            params["features"] = self.features
        if self.input is not None:
            params["input"] = self.input
        return params


def parse_params(params: dict[str, Any]) -> TrainRequest:
    """The request PARAMS describe, or one sentence naming what is wrong with them."""
    unknown = sorted(set(params) - _KEYS)
    if unknown:
        raise SctkError(
            f"uq.train does not know the parameter(s) {', '.join(unknown)}; use "
            f"{', '.join(sorted(_KEYS))}."
        )
    config = params.get("config") or {}
    if not isinstance(config, dict):
        raise SctkError("'config' must be an object of model parameters.")
    config = dict(config)
    kind = config.pop("kind", "tabular")
    if kind not in KINDS:
        raise SctkError(f'The model kind must be "tabular" or "field"; got {kind!r}.')
    dataset, target = params.get("dataset"), params.get("target")
    if not isinstance(dataset, str) or not dataset:
        raise SctkError("uq.train needs 'dataset': the name of a stored dataset.")
    if kind == "field":
        return _parse_field(params, dataset, config)
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
    name = _name(params, dataset, target)
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
    calibration = _calibration(params)
    return TrainRequest(dataset, target, features, name, config, calibration)


def _name(params: dict[str, Any], dataset: str, target: str) -> str:
    from sctk.pipeline.store import check_name

    name = params.get("name")
    if not name:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{target}").strip("._-")[:120]
    return check_name(name)


def _calibration(params: dict[str, Any]) -> float | str | None:
    calibration = params.get("calibration")
    if calibration is None:
        return None
    if isinstance(calibration, bool) or not isinstance(calibration, int | float | str):
        raise SctkError("'calibration' must be a fraction between 0 and 1 or a dataset name.")
    if isinstance(calibration, int | float) and not 0.0 < float(calibration) < 1.0:
        raise SctkError(f"The calibration fraction must lie between 0 and 1; got {calibration}.")
    return calibration


def _parse_field(params: dict[str, Any], dataset: str, config: dict[str, Any]) -> TrainRequest:
    from sctk.uq import field_training, fields

    if params.get("features") is not None:
        raise SctkError(
            "'features' are the columns of a tabular model; a field model reads its input "
            "fields from the column 'input' (default \"x\")."
        )
    target = params.get("target") or fields.TARGET
    input_col = params.get("input") or fields.INPUT
    for key, value in (("target", target), ("input", input_col)):
        if not isinstance(value, str) or len(value) > 200:
            raise SctkError(f"'{key}' must be a column name.")
    if target == input_col:
        raise SctkError(f"The target column '{target}' cannot also be the input column.")
    checked = field_training.check_config(config)
    if "alpha_bounds" in checked:
        checked["alpha_bounds"] = list(checked["alpha_bounds"])
    return TrainRequest(
        dataset,
        target,
        None,
        _name(params, dataset, target),
        checked,
        _calibration(params),
        kind="field",
        input=input_col,
    )


def _fraction(req: TrainRequest) -> float:
    return DEFAULT_FRACTION if req.calibration is None else float(req.calibration)


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


def check(session: Session, params: dict[str, Any]) -> TrainRequest:
    """Everything that can be checked before training: one sentence now, not a failed job."""
    from sctk.pipeline import store

    req = parse_params(params)
    if req.kind == "field":
        from sctk.uq.field_training import check_dataset

        names = [req.dataset] + ([req.calibration] if isinstance(req.calibration, str) else [])
        for name in names:
            check_dataset(store.get(session, name), str(req.input), req.target)
        return req
    columns_for(req, store.get(session, req.dataset).columns)
    if isinstance(req.calibration, str):
        store.get(session, req.calibration)
    return req


def _split(req: TrainRequest, frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    n_cal = int(round(_fraction(req) * len(frame)))
    return frame.iloc[order[n_cal:]], frame.iloc[order[:n_cal]]


def train(
    session: Session,
    home: Path,
    params: dict[str, Any],
    progress=None,
    log_line=None,
    owner: str = "jobs",
    row_budget: int | None = None,
) -> dict[str, Any]:
    """Train and register the model PARAMS describe, as OWNER's; the registry row as a dict.

    A dataset of more than ROW_BUDGET rows (default: uq.train_row_budget's) is trained on a
    seeded sample of that many rows, stratified on the target (sctk.uq.sampling)."""
    from sctk import __version__
    from sctk.pipeline import store
    from sctk.uq import metrics, registry, tabular_inputs
    from sctk.uq.conformal import min_points
    from sctk.uq.hybrid import HybridRegressor, as_target

    req = parse_params(params)
    if req.kind == "field":
        return _train_fields(session, home, req, owner, progress, log_line)
    ds = store.get(session, req.dataset)
    features = columns_for(req, ds.columns)
    budget = row_budget or _default_budget()
    sample = None
    if ds.rows > budget:
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
        frame = sample.frame
        if log_line is not None:
            log_line(sample.sentence())
    else:
        frame = store.read(home, ds)
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
    config = dict(req.config)
    group = config.get("group_by")
    if isinstance(group, str):  # a column name: the model takes its index among the features
        if group not in features:
            raise SctkError(
                f"The grouping column '{group}' is not one of the model's features "
                f"({', '.join(features[:20])}); add it to the features."
            )
        config["group_by"] = features.index(group)
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
    try:
        if "hidden" in config:
            config["hidden"] = tuple(config["hidden"])
        if "alpha_bounds" in config:
            config["alpha_bounds"] = tuple(config["alpha_bounds"])
        model = HybridRegressor(**config)
    except (TypeError, ValueError) as exc:
        raise SctkError(f"The model settings are not usable: {exc}.") from None

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
    lineage = {
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
            else {"fraction": _fraction(req), "seed": int(model.seed)}
        ),
        "features": features,
        "target": req.target,
        **({"group": features[config["group_by"]]} if group is not None else {}),
        "versions": {**store.versions(), "sctk": __version__, "torch": _torch_version()},
    }
    row = registry.save(
        session,
        home,
        model,
        req.name,
        config=registry.params_of(model),
        metrics=scores,
        lineage=lineage,
        owner=owner,
    )
    if log_line is not None:
        log_line(f"stored model '{row.name}' v{row.version} (id {row.id})")
    if progress is not None:
        progress(1.0, f"stored model '{row.name}' v{row.version}")
    return {"model": registry.as_dict(row)}


def _train_fields(
    session: Session, home: Path, req: TrainRequest, owner: str, progress=None, log_line=None
) -> dict[str, Any]:
    """Train and register the field model REQ describes (sctk.uq.field_training)."""
    from sctk.pipeline import store
    from sctk.uq import evaluation, field_training, registry

    input_col, target = str(req.input), req.target
    ds = store.get(session, req.dataset)
    field_training.check_columns(ds.name, ds.columns, input_col, target)
    X, Y = field_training.read_fields(home, ds, input_col, target)
    if isinstance(req.calibration, str):
        cal_ds = store.get(session, req.calibration)
        field_training.check_columns(cal_ds.name, cal_ds.columns, input_col, target)
        X_cal, Y_cal = field_training.read_fields(home, cal_ds, input_col, target)
        if X_cal.shape[1:] != X.shape[1:]:
            raise SctkError(
                f"The calibration dataset '{cal_ds.name}' holds fields of shape "
                f"{list(X_cal.shape[1:])}; the training fields have {list(X.shape[1:])}."
            )
        calibration = {"dataset": cal_ds.name, "sha256": cal_ds.sha256}
    else:
        seed = int(req.config.get("seed", 0))
        order = np.random.default_rng(seed).permutation(len(X))
        n_cal = int(round(_fraction(req) * len(X)))
        if n_cal < 1 or n_cal >= len(X):
            raise SctkError(
                f"Dataset '{ds.name}' has {len(X)} fields: too few to hold out a calibration "
                f"fraction of {_fraction(req)} and train on the rest; give more fields."
            )
        cal, train_idx = order[:n_cal], order[n_cal:]
        X, Y, X_cal, Y_cal = X[train_idx], Y[train_idx], X[cal], Y[cal]
        calibration = {"fraction": _fraction(req), "seed": seed}
    need = min_points_for_metrics()
    if Y_cal.size < need:
        raise SctkError(
            f"The calibration set has {Y_cal.size} values, too few for intervals at alpha "
            f"{METRICS_ALPHA}: it needs at least {need}; use a larger fraction or dataset."
        )
    model = field_training.make_model(req.config, width=X.shape[-1])
    field_training.fit(model, X, Y, X_cal, Y_cal, progress)
    out = model.predict_interval(X_cal, alpha=METRICS_ALPHA)
    scores = evaluation.calibration_metrics(Y_cal, out, Y_cal.size)
    scores.update(
        {
            "n_train_fields": int(len(X)),
            "n_calibration_fields": int(len(X_cal)),
            "measured_on": "calibration",
            "epochs_run": len(model.history_),
        }
    )
    lineage = field_training.lineage(ds, calibration, X, input_col, target)
    row = registry.save(
        session, home, model, req.name, metrics=scores, lineage=lineage, owner=owner
    )
    if log_line is not None:
        log_line(f"stored model '{row.name}' v{row.version} (id {row.id})")
    if progress is not None:
        progress(1.0, f"stored model '{row.name}' v{row.version}")
    return {"model": registry.as_dict(row)}


def min_points_for_metrics() -> int:
    from sctk.uq.conformal import min_points

    return min_points(METRICS_ALPHA)


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


@job_kind(
    KIND,
    "Train a hybrid UQ model on a dataset and register it.",
    "models.train",
    check=parse_params,
)
def uq_train(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    with job_session(ctx) as (settings, session):
        return train(
            session, Path(ctx.home), params, progress=ctx.progress, log_line=ctx.log,
            owner=ctx.owner, row_budget=settings.uq.train_row_budget,
        )  # fmt: skip


@contextmanager
def job_session(ctx: JobContext) -> Iterator[tuple[Any, Session]]:
    """(settings, session) for a UQ job in the process running it: the data directory's
    settings, a session on an engine of the job's own (disposed after), and the physics
    functions an admin listed admitted for its duration."""
    from sctk import config
    from sctk.storage.engine import one_off_session
    from sctk.uq import physics_registry

    settings = config.load(Path(ctx.home)).settings
    with (
        one_off_session(settings) as session,
        physics_registry.admitted(settings.uq.physics_allowed),
    ):
        yield settings, session


def _default_budget() -> int:
    from sctk.config import UqSettings

    return UqSettings().train_row_budget
