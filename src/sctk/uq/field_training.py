"""Training a field model (FieldHybridRegressor) on stored fields: the one path that
`sctk uq train --config F.toml` (kind = "field"), POST /api/v1/models and `sctk uq demo` share.

A field dataset holds one field per row: its input column (default 'x') and its target
column (default 'y') each hold a field of shape [C, H, W] flattened to C*H*W numbers. The
dataset's lineage records that shape under 'fields' (sctk.pipeline.arrays); a dataset without
it is read as C = 2 velocity components on a square grid. `store_npz` stores an .npz file of
4-D arrays [N, C, H, W] so (what `sctk uq train --data FILE.npz` does before training), by
the same path `sctk data import FILE.npz` and POST /api/v1/datasets take.

The physics is named in the config: "coarse" (the flow demo's coarse solver,
sctk.uq.flow:coarse_physics), "identity" (S(x) = x: the input carried forward), "none" (the
network alone), or a registered function mapping fields [B, C, H, W] to fields of the same
shape (sctk.uq.physics_registry: an installed package's 'sctk.physics' entry point, or a
'package.module:function' an admin lists under [uq] physics_allowed in sctk.toml).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.uq import fields
from sctk.uq.train_request import (
    METRICS_ALPHA,
    TrainRequest,
    calibration_of,
    finish,
    min_points_for_metrics,
    model_name,
)

KIND = "field"
DEFAULT_CHANNELS = 2
_POSITIVE_FLOAT = ("dx", "dy", "lr")


def config_keys() -> set[str]:
    """FieldHybridRegressor's parameters (imported here: torch is slow to import)."""
    from sctk.uq.field_hybrid import FieldHybridRegressor

    return set(inspect.signature(FieldHybridRegressor).parameters)


def physics_name(value: Any) -> str | None:
    """The registered 'module:function' name (or None) a config's physics value stands for
    (sctk.uq.physics_registry: anything else is refused, never imported)."""
    from sctk.uq import physics_registry

    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return physics_registry.available(value)


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """CONFIG (without 'kind') as FieldHybridRegressor parameters, or one sentence."""
    from sctk.uq import bounds

    known = config_keys()
    bad = sorted(set(config) - known)
    if bad:
        raise SctkError(
            f"Unknown field-model setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}."
        )
    out = dict(config)
    if "physics" in out:
        # looked up now, so that a name no registry holds is one sentence to whoever asked
        # (a 400 from the API), not a job that fails later
        out["physics"] = physics_name(out["physics"])
    bounds.check(out)
    for key in _POSITIVE_FLOAT:
        value = out.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise SctkError(f"'{key}' must be a positive number; got {value!r}.")
    if "band" in out:
        from sctk.uq.field_bands import check_band

        check_band(out["band"])
    if "alpha_bounds" in out:
        bounds = out["alpha_bounds"]
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            raise SctkError("'alpha_bounds' must be two numbers [low, high].")
        out["alpha_bounds"] = tuple(bounds)
    return out


def make_model(config: dict[str, Any], width: int | None = None):
    """A FieldHybridRegressor from CONFIG (no physics unless it names one); dx defaults to
    2 pi / WIDTH (a periodic [0, 2 pi) domain) when the grid WIDTH is known."""
    from sctk.uq.field_hybrid import FieldHybridRegressor

    params = check_config(config)  # also finds the physics, or says it is not there
    if "dx" not in params and width:
        params["dx"] = 2 * math.pi / width
    try:
        return FieldHybridRegressor(**params)
    except (TypeError, ValueError) as exc:
        raise SctkError(f"The model settings are not usable: {exc}.") from None


# --- data ---------------------------------------------------------------------------------


def check_columns(name: str, columns: dict[str, str], input_col: str, target: str) -> None:
    """One sentence now when dataset NAME (COLUMNS: name -> dtype) cannot hold fields."""
    for col in (input_col, target):
        if col not in columns:
            raise SctkError(
                f"Dataset '{name}' has no column '{col}'; a field model needs its input fields "
                f"in '{input_col}' and its target fields in '{target}' (one flattened field per "
                "row), as 'sctk data import FILE.npz' stores an .npz of [N, C, H, W] arrays."
            )
        if columns[col] != "object":
            raise SctkError(
                f"Dataset '{name}': column '{col}' holds single {columns[col]} values, not "
                "fields; a field model needs one flattened field per row (import an .npz file "
                "of [N, C, H, W] arrays to store them so)."
            )


def shape_of(ds, frame, column: str) -> tuple[int, ...]:
    """The field shape of COLUMN of dataset DS: from its lineage, or C = 2 on a square grid."""
    from sctk.pipeline import arrays

    recorded = arrays.recorded(ds.lineage, [column]).get(column)
    if recorded:
        return tuple(int(v) for v in recorded)
    first = frame[column].iloc[0] if len(frame) else None
    try:
        size = int(np.asarray(first, dtype=np.float64).size)
    except (TypeError, ValueError):
        size = 0
    n = int(round(math.sqrt(size / DEFAULT_CHANNELS))) if size else 0
    if n < 1 or DEFAULT_CHANNELS * n * n != size:
        raise SctkError(
            f"Dataset '{ds.name}': column '{column}' holds {size} values a row, not a field of "
            f"{DEFAULT_CHANNELS} x n x n values, and the dataset records no field shape; import "
            "the fields from an .npz file of [N, C, H, W] arrays instead."
        )
    return (DEFAULT_CHANNELS, n, n)


def check_shapes(
    what: str, input_col: str, target: str, shape: Any, target_shape: Any = None
) -> None:
    """One sentence when the per-row SHAPE of the input fields (or TARGET_SHAPE of the target
    fields, when known) is not what a field model takes."""
    if len(shape) != 3 or shape[0] < 2:
        raise SctkError(
            f"{what}: column '{input_col}' holds fields of shape {list(shape)}; a field model "
            "needs fields [C, H, W] with at least 2 velocity components C (import an .npz of "
            "[N, C, H, W] arrays)."
        )
    if target_shape is not None and list(target_shape) != list(shape):
        raise SctkError(
            f"{what}: column '{target}' holds fields of shape {list(target_shape)}, "
            f"'{input_col}' of {list(shape)}; give one target field of the input's shape per "
            "input field."
        )


def check_dataset(ds, input_col: str, target: str) -> None:
    """One sentence now when dataset DS cannot hold fields: its columns, and the field shapes
    its lineage records (the data itself is checked when it is read)."""
    from sctk.pipeline import arrays

    check_columns(ds.name, ds.columns, input_col, target)
    shapes = arrays.recorded(ds.lineage, [input_col, target])
    if input_col in shapes:
        check_shapes(
            f"Dataset '{ds.name}'", input_col, target, shapes[input_col], shapes.get(target)
        )


def read_fields(home: Path, ds, input_col: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The input and target fields of dataset DS, checked (shape, finite values)."""
    from sctk.pipeline import store

    frame = store.read(home, ds)
    what = f"Dataset '{ds.name}'"
    if len(frame) == 0:
        raise SctkError(f"{what} has no rows; give at least one field.")
    shape = shape_of(ds, frame, input_col)
    check_shapes(what, input_col, target, shape, shape_of(ds, frame, target))
    X = fields.from_frame(frame, input_col, shape, what)
    Y = fields.from_frame(frame, target, shape, what)
    for col, array in ((input_col, X), (target, Y)):
        finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if not finite.all():
            raise SctkError(
                f"{what}: column '{col}' holds NaN or infinite values (first in row "
                f"{int(np.flatnonzero(~finite)[0])}); fill or remove those fields first."
            )
    return X, Y


def check_arrays(X: np.ndarray, Y: np.ndarray, what: str, input_col: str, target: str) -> None:
    """One sentence when the input and target arrays are not fields of one shape."""
    for name, a in ((input_col, X), (target, Y)):
        if a.ndim != 4 or a.shape[0] == 0 or a.shape[1] < 2:
            raise SctkError(
                f"{what}: array '{name}' has shape {list(a.shape)}; a field model needs fields "
                "[N, C, H, W] with N >= 1 and at least 2 velocity components C."
            )
        if a.dtype.kind not in "iuf":
            raise SctkError(f"{what}: array '{name}' holds {a.dtype} values, not numbers.")
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
            raise SctkError(
                f"{what}: array '{name}' holds NaN or infinite values (first in field "
                f"{int(bad[0])}); fill or remove those fields first."
            )
    if X.shape != Y.shape:
        raise SctkError(
            f"{what}: '{target}' has shape {list(Y.shape)}, '{input_col}' has "
            f"{list(X.shape)}; give one target field of the input's shape per input field."
        )


def store_npz(
    session: Session,
    home: Path,
    path: Path,
    owner: str,
    name: str | None = None,
    input_col: str = fields.INPUT,
    target: str = fields.TARGET,
):
    """Store the fields of the .npz file PATH as a dataset (one field per row); the dataset.

    Storing the same file again finds the dataset it stored before."""
    from sctk.pipeline import arrays, store

    path = Path(path).expanduser()
    found = fields.read_npz(path, (input_col, target))
    X, Y = found[input_col], found[target]
    check_arrays(X, Y, path.name, input_col, target)
    name = name or store.name_from_file(path.name)
    # the path `sctk data import` takes for an .npz of arrays [N, ...]
    frame, shapes = arrays.to_frame({input_col: X, target: Y}, path.name)
    lineage = {
        "source": {"file": path.name, "sha256": store.file_sha256(path)},
        arrays.FIELDS: arrays.entry(shapes, input=input_col, target=target),
        "versions": store.versions(),
    }
    out = store.Output(name, frame, "parquet", lineage)
    return store.store(session, home, [out], "uq.fields", owner)[0].dataset


# --- training -----------------------------------------------------------------------------


def fit(model, X, Y, X_cal, Y_cal, progress=None, start: float = 0.05, end: float = 0.9):
    """MODEL fitted on (X, Y) and calibrated on (X_cal, Y_cal), progress per epoch."""

    def on_epoch(epoch: int, total: int, loss: float) -> None:
        if progress is not None:
            progress(
                start + (end - start) * epoch / total, f"epoch {epoch}/{total}, loss {loss:.4g}"
            )

    if progress is not None:
        progress(start, f"training on {len(X)} fields of shape {list(X.shape[1:])}")
    try:
        return model.fit(X, Y, X_cal, Y_cal, callback=on_epoch)
    except SctkError as exc:
        # the physics function raises sentences of its own about the fields it cannot take
        raise SctkError(f"Training failed: {exc.message}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise SctkError(f"The model settings do not fit these fields ({first}).") from None


def lineage(dataset, calibration: dict[str, Any], X: np.ndarray, input_col: str, target: str):
    """The lineage of a field model trained on DATASET's fields X."""
    from sctk import __version__
    from sctk.pipeline import store

    return {
        "dataset": {"name": dataset.name, "sha256": dataset.sha256},
        "calibration": calibration,
        "input": input_col,
        "target": target,
        "shape": [int(v) for v in X.shape[1:]],
        "versions": {**store.versions(), "sctk": __version__, "torch": _torch_version()},
    }


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


# --- a uq.train request -------------------------------------------------------------


def parse_request(params: dict[str, Any], dataset: str, config: dict[str, Any]) -> TrainRequest:
    """A field model's `uq.train` request from PARAMS (DATASET and CONFIG read already)."""

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
    checked = check_config(config)
    if "alpha_bounds" in checked:
        checked["alpha_bounds"] = list(checked["alpha_bounds"])
    return TrainRequest(
        dataset,
        target,
        None,
        model_name(params, dataset, target),
        checked,
        calibration_of(params),
        kind="field",
        input=input_col,
    )


def check_request(session: Session, req: TrainRequest) -> None:
    """The datasets REQ names exist and hold fields in its columns."""
    from sctk.pipeline import store

    names = [req.dataset] + ([req.calibration] if isinstance(req.calibration, str) else [])
    for name in names:
        check_dataset(store.get(session, name), str(req.input), req.target)


def train_request(
    session: Session, home: Path, req: TrainRequest, owner: str, progress=None, log_line=None
) -> dict[str, Any]:
    """Train and register the field model REQ describes; the registry row as a dict."""
    from sctk.pipeline import store
    from sctk.uq import evaluation

    input_col, target = str(req.input), req.target
    ds = store.get(session, req.dataset)
    check_columns(ds.name, ds.columns, input_col, target)
    X, Y = read_fields(home, ds, input_col, target)
    if isinstance(req.calibration, str):
        cal_ds = store.get(session, req.calibration)
        check_columns(cal_ds.name, cal_ds.columns, input_col, target)
        X_cal, Y_cal = read_fields(home, cal_ds, input_col, target)
        if X_cal.shape[1:] != X.shape[1:]:
            raise SctkError(
                f"The calibration dataset '{cal_ds.name}' holds fields of shape "
                f"{list(X_cal.shape[1:])}; the training fields have {list(X.shape[1:])}."
            )
        calibration = {"dataset": cal_ds.name, "sha256": cal_ds.sha256}
    else:
        seed = int(req.config.get("seed", 0))
        order = np.random.default_rng(seed).permutation(len(X))
        n_cal = int(round(req.fraction * len(X)))
        if n_cal < 1 or n_cal >= len(X):
            raise SctkError(
                f"Dataset '{ds.name}' has {len(X)} fields: too few to hold out a calibration "
                f"fraction of {req.fraction} and train on the rest; give more fields."
            )
        cal, train_idx = order[:n_cal], order[n_cal:]
        X, Y, X_cal, Y_cal = X[train_idx], Y[train_idx], X[cal], Y[cal]
        calibration = {"fraction": req.fraction, "seed": seed}
    need = min_points_for_metrics()
    if Y_cal.size < need:
        raise SctkError(
            f"The calibration set has {Y_cal.size} values, too few for intervals at alpha "
            f"{METRICS_ALPHA}: it needs at least {need}; use a larger fraction or dataset."
        )
    model = make_model(req.config, width=X.shape[-1])
    fit(model, X, Y, X_cal, Y_cal, progress)
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
    record = lineage(ds, calibration, X, input_col, target)
    return finish(session, home, req, model, scores, record, owner, progress, log_line)
