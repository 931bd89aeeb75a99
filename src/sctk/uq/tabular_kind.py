"""The tabular model kind: a HybridRegressor over rows of feature columns (sctk.uq.hybrid).

Its file state (`model_state`) is a dict of plain values and tensors; the columns it was
trained on are in its registry row's lineage (sctk.uq.tabular_inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import UqModel
from sctk.uq import conditional, hybrid_state
from sctk.uq.hybrid import HybridRegressor, resolve_physics
from sctk.uq.model_kind import label, model_kind, savable_params, wrong_kind
from sctk.uq.tabular_inputs import (
    calibration_sample,
    feature_matrix,
    features_of,
    rows_matrix,
    target_values,
)

FORMAT = 1
KIND = "tabular"
# most rows one prediction takes in memory (a dataset of any size streams: `uq predict --out`)
MAX_PREDICT_ROWS = 100_000
OUTPUTS = ("mean", "lower", "upper", "sigma", "psi")


def model_state(model: HybridRegressor) -> dict[str, Any]:
    """The fitted MODEL as a dict of plain values and tensors (nothing executable)."""
    params = savable_params(model)
    params["hidden"] = list(params["hidden"])
    params["alpha_bounds"] = list(params["alpha_bounds"])
    return {
        "format": FORMAT,
        "kind": KIND,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        **hybrid_state.full_state(model),
        "history": [dict(h) for h in getattr(model, "history_", [])],
    }


def model_from_state(state: dict[str, Any]) -> HybridRegressor:
    """The HybridRegressor a model_state() dict describes, ready to predict (files of the
    first form, an MLP without a 'method', too)."""
    if state.get("format") != FORMAT or state.get("kind") != KIND:
        raise SctkError("The model file is not a tabular sctk model of a known format.")
    params = dict(state["params"])
    params["hidden"] = tuple(params["hidden"])
    params["alpha_bounds"] = tuple(params["alpha_bounds"])
    if "method" not in params:  # saved before `method`: the network it always was
        params["method"] = "mlp"
    model = HybridRegressor(**params)
    model.physics_fn_ = resolve_physics(model.physics)
    model.n_features_in_ = int(state["n_features_in"])
    hybrid_state.restore(model, state)
    model.history_ = list(state.get("history", []))
    return model


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for key in ("hidden", "alpha_bounds"):
        out[key] = list(out[key])
    if out.get("boost") is not None:
        out["boost"] = dict(out["boost"])
    if out.get("physics") is not None and not isinstance(out["physics"], str):
        out["physics"] = repr(out["physics"])
    return out


def too_many(what: str, rows: int) -> SctkError:
    return SctkError(
        f"{what} has {rows} rows, more than the {MAX_PREDICT_ROWS} one prediction takes; "
        "predict a dataset of any size with the uq.predict job or 'sctk uq predict --out'."
    )


class TabularKind:
    name = KIND
    unit = "row"
    takes = "rows of feature columns"
    value_unit = "rows"
    inline_limit = 10_000
    out_suffixes = (".csv", ".parquet")
    streams = True
    observes = True

    def owns(self, model: Any) -> bool:
        return isinstance(model, HybridRegressor)

    def state(self, model: Any) -> dict[str, Any]:
        return model_state(model)

    def from_state(self, state: dict[str, Any]) -> Any:
        return model_from_state(state)

    def params(self, model: Any) -> dict[str, Any]:
        return _jsonable(model.get_params())

    def inputs(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        return self.check(row, feature_matrix(frame, features_of(row), what), what)

    def targets(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        return target_values(row, frame, what)

    def read_file(self, row: UqModel, path: Path, need_target: bool):
        raise SctkError(
            f"Model {label(row)} is a tabular model: give it a stored dataset's name, not the "
            f"file {path}."
        )

    def from_request(self, row: UqModel, rows: Any, fields: Any) -> np.ndarray:
        if rows is None:
            raise wrong_kind(row, "fields [B, C, H, W]")
        return self.check(row, rows_matrix(rows, features_of(row), "The rows"), "The rows")

    def check(self, row: UqModel, X: Any, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise wrong_kind(row, "fields [B, C, H, W]")
        if X.shape[0] > MAX_PREDICT_ROWS:
            raise too_many(what, X.shape[0])
        return X

    def render(self, X: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, Any]:
        return {k: out[k].tolist() for k in OUTPUTS}

    def observed(self, row: UqModel, frame: pd.DataFrame) -> list[float | None] | None:
        target = str((row.lineage or {}).get("target") or "")
        if target not in frame.columns:
            return None
        col = frame[target]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            return None
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
        return [float(v) if np.isfinite(v) else None for v in values]

    def evaluation_extra(self, row: UqModel, model: Any, X: np.ndarray, y: np.ndarray, out):
        group_by = getattr(model, "group_by", None)  # Mondrian: coverage held per group
        if group_by is None:
            return {}
        return {
            "group": (row.lineage or {}).get("group") or f"feature {group_by}",
            "coverage_by_group": conditional.by_group(
                y, out["lower"], out["upper"], X[:, group_by]
            ),
        }

    def smoke_input(self, session: Session, home: Path, row: UqModel, model: Any) -> np.ndarray:
        # rows of zeros would fail a physics that divides by a feature
        return calibration_sample(session, home, row, model, 1)[0]

    def example_request(self, row: UqModel) -> dict[str, Any]:
        return {"rows": [dict.fromkeys(features_of(row), 0.0)]}

    def parse_train(self, params: dict[str, Any], dataset: str, config: dict[str, Any]):
        from sctk.uq import tabular_training

        return tabular_training.parse(params, dataset, config)

    def check_train(self, session: Session, req: Any) -> None:
        from sctk.uq import tabular_training

        tabular_training.check(session, req)

    def train(self, session, home, req, owner, progress, log_line, row_budget):
        from sctk.uq import tabular_training

        return tabular_training.train(
            session, home, req, owner, progress, log_line, row_budget=row_budget
        )

    def store_training_file(self, session, home, path, params, owner):
        raise SctkError(
            f"{path} is a file; a tabular model trains on a stored dataset: import it "
            "with 'sctk data import' first (or set kind = \"field\" in the config for a field "
            "model)."
        )

    def summary(self, result: dict[str, Any], shown: int):
        return (
            f" (first {shown} of {result['rows']} rows)",
            ["row", *OUTPUTS],
            [[i, *(f"{result[k][i]:.5g}" for k in OUTPUTS)] for i in range(shown)],
        )


TABULAR = model_kind(TabularKind())
