"""The field model kind: a FieldHybridRegressor over velocity fields [B, C, H, W]
(sctk.uq.field_hybrid; its file state in sctk.uq.field_state).

Its registry row's lineage names the column of its input fields ('input', default "x"),
of its target fields ('target', default "y") and their shape [C, H, W].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import UqModel
from sctk.uq import field_state, fields
from sctk.uq.field_hybrid import FieldHybridRegressor, as_fields
from sctk.uq.model_kind import label, model_kind, wrong_kind

# most values one prediction takes (a field counts each of its values)
MAX_PREDICT_VALUES = 4_000_000


def field_shape(row: UqModel) -> tuple[int, ...]:
    return tuple(int(v) for v in (row.lineage or {}).get("shape") or ())


def input_column(row: UqModel) -> str:
    return str((row.lineage or {}).get("input") or "x")


def target_column(row: UqModel) -> str:
    return str((row.lineage or {}).get("target") or "y")


class FieldKind:
    name = field_state.KIND
    unit = "field"
    takes = "fields [B, C, H, W]"
    value_unit = "values"  # each pixel of a field is a calibration value
    inline_limit = 256
    out_suffixes = (".npz",)
    streams = False
    observes = False

    def owns(self, model: Any) -> bool:
        return isinstance(model, FieldHybridRegressor)

    def state(self, model: Any) -> dict[str, Any]:
        return field_state.model_state(model)

    def from_state(self, state: dict[str, Any]) -> Any:
        return field_state.model_from_state(state)

    def params(self, model: Any) -> dict[str, Any]:
        return field_state.jsonable_params(model)

    def inputs(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        X = fields.from_frame(frame, input_column(row), field_shape(row), what)
        return self.check(row, X, what)

    def targets(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        y = fields.from_frame(frame, target_column(row), field_shape(row), what)
        return self.check(row, y, what)

    def read_file(self, row: UqModel, path: Path, need_target: bool):
        names = (input_column(row),)
        if need_target:
            names += (target_column(row),)
        arrays = fields.read_npz(path, names)
        X = self.check(row, arrays[names[0]], f"{path.name} array '{names[0]}'")
        if not need_target:
            return X, None
        y = self.check(row, arrays[names[1]], f"{path.name} array '{names[1]}'")
        if y.shape != X.shape:
            raise SctkError(
                f"{path.name}: '{names[1]}' has shape {list(y.shape)}, '{names[0]}' has "
                f"{list(X.shape)}; give one target field per input field."
            )
        return X, y

    def from_request(self, row: UqModel, rows: Any, fields_value: Any) -> np.ndarray:
        if fields_value is None:
            raise SctkError(
                f"Model {label(row)} is a field model; send 'fields' (nested lists "
                "[B, C, H, W]) or a 'dataset', not 'rows'."
            )
        return self.check(row, fields.from_json(fields_value), "The fields")

    def check(self, row: UqModel, X: Any, what: str) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.ndim == 2:  # a tabular model's feature matrix
            raise wrong_kind(row, "rows of feature columns")
        X = as_fields(X, what)
        shape = field_shape(row)
        if shape and tuple(X.shape[1:]) != shape:
            raise SctkError(
                f"{what} has fields of shape {list(X.shape[1:])} (C, H, W); model {label(row)} "
                f"takes {list(shape)}."
            )
        if X.size > MAX_PREDICT_VALUES:
            raise SctkError(
                f"{what} holds {X.shape[0]} fields, more than one prediction takes; split them."
            )
        return X

    def render(self, X: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, Any]:
        return {
            "shape": [int(v) for v in X.shape[1:]],
            **{k: out[k].tolist() for k in ("mean", "lower", "upper", "sigma")},
            "psi": out["psi"].tolist(),  # one per field
        }

    def observed(self, row: UqModel, frame: pd.DataFrame) -> None:
        return None  # the dashboard draws no truths beside a field's bands

    def evaluation_extra(self, row: UqModel, model: Any, X: np.ndarray, y: np.ndarray, out):
        from sctk.uq.field_bands import coverages

        # each pixel, and each field covered everywhere at once
        return {
            **coverages(y, out["lower"], out["upper"]),
            "band": getattr(model, "band", "pixel"),
        }

    def smoke_input(self, session: Session, home: Path, row: UqModel, model: Any) -> np.ndarray:
        return np.zeros((1, *field_shape(row)))

    def example_request(self, row: UqModel) -> dict[str, Any]:
        c, h, w = field_shape(row)
        return {"fields": [[[[0.0] * w] * h] * c]}

    def parse_train(self, params: dict[str, Any], dataset: str, config: dict[str, Any]):
        from sctk.uq import field_training

        return field_training.parse_request(params, dataset, config)

    def check_train(self, session: Session, req: Any) -> None:
        from sctk.uq import field_training

        field_training.check_request(session, req)

    def train(self, session, home, req, owner, progress, log_line, row_budget):
        from sctk.uq import field_training

        # a field model trains on every field given (no row budget: fields are few)
        return field_training.train_request(session, home, req, owner, progress, log_line)

    def store_training_file(self, session, home, path, params, owner):
        from sctk.uq import field_training

        return field_training.store_npz(
            session,
            home,
            path,
            owner,
            input_col=params.get("input") or fields.INPUT,
            target=params.get("target") or fields.TARGET,
        )

    def summary(self, result: dict[str, Any], shown: int):
        width = np.asarray(result["upper"]) - np.asarray(result["lower"])
        sigma = np.asarray(result["sigma"])
        rows = [
            [
                i,
                f"{result['psi'][i]:.4f}",
                f"{width[i].mean():.4g}",
                f"{width[i].max():.4g}",
                f"{sigma[i].mean():.4g}",
            ]
            for i in range(shown)
        ]
        return (
            f", fields {result['shape']} (first {shown} of {result['rows']}; --out F.npz or "
            "--json for the values)",
            ["field", "psi", "mean width", "max width", "mean sigma"],
            rows,
        )


FIELD = model_kind(FieldKind())
