"""The inputs of a tabular model: its feature columns as a float matrix, from a stored
dataset's frame or an API request's rows, and its target; one sentence for whatever does not
fit (a missing or text column, a NaN, no rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import UqModel


def features_of(row: UqModel) -> list[str]:
    return list((row.lineage or {}).get("features") or [])


def _missing_columns(what: str, missing: list[str], features: list[str]) -> SctkError:
    return SctkError(
        f"{what} lacks the column(s) {', '.join(missing[:10])} the model was trained on; "
        f"it needs {', '.join(features[:20])}."
    )


def checked_finite(X: np.ndarray, features: list[str], what: str) -> np.ndarray:
    finite = np.isfinite(X)
    if not finite.all():
        cols = [features[j] for j in np.flatnonzero(~finite.all(axis=0))]
        rows = np.flatnonzero(~finite.all(axis=1))
        raise SctkError(
            f"{what} holds missing, NaN or infinite values in column(s) {', '.join(cols[:10])} "
            f"(first at row {int(rows[0])}); fill or remove them first."
        )
    return X


def feature_matrix(frame: pd.DataFrame, features: list[str], what: str) -> np.ndarray:
    """FRAME's FEATURES as a float matrix, or one sentence saying what is wrong with them."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise _missing_columns(what, missing, features)
    if len(frame) == 0:
        raise SctkError(f"{what} has no rows; give at least one.")
    bad = [
        f
        for f in features
        if not pd.api.types.is_numeric_dtype(frame[f]) or pd.api.types.is_bool_dtype(frame[f])
    ]
    if bad:
        raise SctkError(
            f"{what}: column(s) {', '.join(bad[:10])} are not numeric; the model needs numbers."
        )
    return checked_finite(frame[features].to_numpy(dtype=np.float64), features, what)


def rows_matrix(rows: list[dict[str, float | None]], features: list[str], what: str) -> np.ndarray:
    """ROWS (objects of numbers or None, as the API takes them) as FEATURES' float matrix, with
    the sentences of `feature_matrix`; built column by column, without a DataFrame (a tenth
    of the cost on 1,000 rows)."""
    if not rows:
        raise SctkError(f"{what} has no rows; give at least one.")
    present = set().union(*rows)
    missing = [f for f in features if f not in present]
    if missing:
        raise _missing_columns(what, missing, features)
    # None (and a key absent from a row) becomes NaN, refused below with the others
    columns = [np.array([r.get(f) for r in rows], dtype=np.float64) for f in features]
    return checked_finite(np.column_stack(columns), features, what)


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

    lineage = row.lineage or {}
    features = features_of(row)
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
        X = feature_matrix(frame, features, f"Dataset '{ds.name}'")
        what = f"calibration inputs of dataset '{ds.name}'"
    except SctkError:
        X = np.asarray(model.scaling_.x_mean, dtype=np.float64).reshape(1, -1)
        what = "the training means (the calibration data is gone or changed)"
    pick = np.random.default_rng(seed).choice(len(X), size=n, replace=len(X) < n)
    return X[pick], what
