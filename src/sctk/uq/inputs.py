"""The data a registered model is asked about: a stored dataset, or (field models) an .npz.

`load_inputs` turns the user's `--data` into the model's inputs X and, when asked, the
targets y, checking them against the model (columns, shapes, finite values) with one
sentence for whatever does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import UqModel


@dataclass
class Inputs:
    X: np.ndarray
    y: np.ndarray | None
    what: str  # "Dataset 'runs'" or "flow.npz": how sentences name the data
    source: dict[str, Any]  # lineage: the dataset or file and its sha256
    frame: pd.DataFrame | None = None


def is_file(data: str) -> bool:
    return data.lower().endswith(".npz")


def load_inputs(
    session: Session, home: Path, row: UqModel, data: str, need_target: bool = False
) -> Inputs:
    """X (and y when NEED_TARGET) for model ROW from DATA: a dataset's name or an .npz file."""
    from sctk.pipeline import store
    from sctk.uq import fields, registry

    if row.kind == "field" and is_file(data):
        path = Path(data).expanduser()
        names = (registry.input_column(row),)
        if need_target:
            names += (registry.target_column(row),)
        arrays = fields.read_npz(path, names)
        what = f"{path.name}"
        X = registry.check_fields(row, arrays[names[0]], f"{what} array '{names[0]}'")
        y = None
        if need_target:
            y = registry.check_fields(row, arrays[names[1]], f"{what} array '{names[1]}'")
            if y.shape != X.shape:
                raise SctkError(
                    f"{what}: '{names[1]}' has shape {list(y.shape)}, '{names[0]}' has "
                    f"{list(X.shape)}; give one target field per input field."
                )
        source = {"file": str(path.resolve()), "sha256": store.file_sha256(path)}
        return Inputs(X, y, what, source)
    if is_file(data):
        raise SctkError(
            f"Model {registry.label(row)} is a tabular model: give it a stored dataset's name, "
            f"not the file {data}."
        )
    ds = store.get(session, data)
    frame = store.read(home, ds)
    what = f"Dataset '{ds.name}'"
    source = {"dataset": ds.name, "sha256": ds.sha256}
    if row.kind == "field":
        shape = registry.field_shape(row)
        X = fields.from_frame(frame, registry.input_column(row), shape, what)
        X = registry.check_fields(row, X, what)
        y = None
        if need_target:
            y = fields.from_frame(frame, registry.target_column(row), shape, what)
            y = registry.check_fields(row, y, what)
        return Inputs(X, y, what, source, frame)
    X = registry.feature_matrix(frame, registry.features_of(row), what)
    y = target_values(row, frame, what) if need_target else None
    return Inputs(X, y, what, source, frame)


def target_values(row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
    """The target column of a tabular model's data, as finite floats."""
    target = str((row.lineage or {}).get("target") or "")
    if not target or target not in frame.columns:
        raise SctkError(
            f"{what} has no column '{target}', the target of model "
            f"'{row.name}' v{row.version}; evaluating or calibrating needs the true values."
        )
    col = frame[target]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise SctkError(f"{what}: the target '{target}' is not numeric.")
    y = col.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise SctkError(
            f"{what} holds missing, NaN or infinite values in the target '{target}' (first at "
            f"row {int(bad[0])}); fill or remove them first."
        )
    return y


def calibration_sample(
    session: Session, home: Path, row: UqModel, model: Any, n: int, seed: int = 0
) -> tuple[np.ndarray, str]:
    """N rows of the inputs tabular model ROW was calibrated on (sampled with replacement when
    there are fewer), and where they came from: inputs a prediction is known to work on, which
    rows of zeros are not (a physics may divide by a feature). When the calibration data is
    gone or changed, rows of the training means, the most typical input the model knows."""
    from sctk.pipeline import store
    from sctk.uq import registry

    lineage = row.lineage or {}
    features = registry.features_of(row)
    cal = lineage.get("calibration") or {}
    source = cal if cal.get("dataset") else lineage.get("dataset") or {}
    try:
        ds = store.get(session, str(source.get("name") or source.get("dataset") or ""))
        if not features or (source.get("sha256") and ds.sha256 != source["sha256"]):
            raise SctkError("changed")
        frame = store.read(home, ds)
        if not cal.get("dataset") and "fraction" in cal:  # the held-out share, as training drew it
            order = np.random.default_rng(int(cal.get("seed", 0))).permutation(len(frame))
            frame = frame.iloc[order[: max(1, int(round(float(cal["fraction"]) * len(frame))))]]
        X = registry.feature_matrix(frame, features, f"Dataset '{ds.name}'")
        what = f"calibration inputs of dataset '{ds.name}'"
    except SctkError:
        X = np.asarray(model.scaling_.x_mean, dtype=np.float64).reshape(1, -1)
        what = "the training means (the calibration data is gone or changed)"
    pick = np.random.default_rng(seed).choice(len(X), size=n, replace=len(X) < n)
    return X[pick], what
