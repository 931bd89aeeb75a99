"""Model kinds: what the registry, prediction, evaluation and operations need of a kind of
model, so that each of them chooses the kind once, here, and never tests its name.

sctk has two kinds, "tabular" (sctk.uq.tabular_kind: HybridRegressor over rows of feature
columns) and "field" (sctk.uq.field_kind: FieldHybridRegressor over fields [B, C, H, W]).
A plugin adds another by declaring an object of the `ModelKind` shape in its
`model_kinds()` hook with `@model_kind` (sctk.plugins); the name it declares is the one a
model's row and file carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.registry import Registry
from sctk.storage.models import UqModel


class ModelKind(Protocol):
    """A kind of model. Every method that checks input raises SctkError with one sentence
    naming what is wrong; none changes the model or the database."""

    name: str  # in uq_models.kind and in the model file's "kind"
    unit: str  # what one input is called in sentences: "row", "field"
    takes: str  # the inputs, described: "rows of feature columns"
    value_unit: str  # what a calibration set counts: "rows", or "values" (each pixel)
    inline_limit: int  # most inputs one API request predicts or evaluates
    out_suffixes: tuple[str, ...]  # the files `sctk uq predict --out` writes
    streams: bool  # a dataset is predicted a partition at a time (`--out`, the uq.predict job)
    # takes observations (true values of earlier inputs): rolling coverage, adaptive
    # conformal mode (alpha moved by them), recalibration from them
    observes: bool

    def owns(self, model: Any) -> bool:
        """MODEL (a fitted estimator) is of this kind."""
        ...

    def state(self, model: Any) -> dict[str, Any]:
        """The fitted MODEL as a dict of plain values and tensors, with "kind" = `name`
        (saved with torch.save, loaded with weights_only=True: nothing executable)."""
        ...

    def from_state(self, state: dict[str, Any]) -> Any:
        """The estimator STATE describes, ready to predict (its physics looked up in the
        physics registry; PhysicsNotRegistered when it is not there)."""
        ...

    def params(self, model: Any) -> dict[str, Any]:
        """MODEL's parameters as JSON values (the registry row's config)."""
        ...

    def inputs(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        """The inputs of model ROW held by FRAME (a stored dataset's rows), checked."""
        ...

    def targets(self, row: UqModel, frame: pd.DataFrame, what: str) -> np.ndarray:
        """The true values of model ROW's target held by FRAME, checked."""
        ...

    def read_file(
        self, row: UqModel, path: Path, need_target: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Inputs (and targets when NEED_TARGET) from a file outside the datasets; a kind
        that reads none says so."""
        ...

    def from_request(self, row: UqModel, rows: Any, fields: Any) -> np.ndarray:
        """Inputs from an API request's 'rows' (objects of feature values) or 'fields'
        (nested lists), whichever it sent; the other one is refused for this kind."""
        ...

    def check(self, row: UqModel, X: Any, what: str) -> np.ndarray:
        """X as inputs of model ROW (shape, finite values, at most what one prediction
        takes)."""
        ...

    def render(self, X: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, Any]:
        """A prediction's arrays OUT for inputs X as JSON values."""
        ...

    def observed(self, row: UqModel, frame: pd.DataFrame) -> list[float | None] | None:
        """FRAME's true values for each input, where known (the dashboard draws them beside
        the intervals); None when the kind shows none."""
        ...

    def evaluation_extra(
        self, row: UqModel, model: Any, X: np.ndarray, y: np.ndarray, out: dict[str, np.ndarray]
    ) -> dict[str, Any]:
        """What an evaluation reports for this kind beyond the common figures."""
        ...

    def smoke_input(self, session: Session, home: Path, row: UqModel, model: Any) -> np.ndarray:
        """One input model ROW is known to predict on (an upgrade's smoke test)."""
        ...

    def example_request(self, row: UqModel) -> dict[str, Any]:
        """The body of a one-input POST .../predict request for model ROW."""
        ...

    def parse_train(self, params: dict[str, Any], dataset: str, config: dict[str, Any]):
        """The `uq.train` request PARAMS make for this kind (a TrainRequest of
        sctk.uq.train_request; DATASET and CONFIG, without 'kind', read already)."""
        ...

    def check_train(self, session: Session, req: Any) -> None:
        """What can be checked of request REQ before training (its datasets, columns)."""
        ...

    def train(
        self, session: Session, home: Path, req: Any, owner: str, progress, log_line,
        row_budget: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Train and register the model REQ describes, as OWNER's; the row as a dict."""
        ...

    def store_training_file(
        self, session: Session, home: Path, path: Path, params: dict[str, Any], owner: str
    ) -> Any:
        """The dataset holding a training file's data (`uq train --data FILE`), stored now;
        a kind that trains from stored datasets only says so."""
        ...

    def summary(self, result: dict[str, Any], shown: int) -> tuple[str, list[str], list[list[Any]]]:
        """A prediction RESULT's first SHOWN inputs as a table: the end of its title (after
        the model and alpha), its columns, its rows."""
        ...


# declared by plugins (sctk.plugins): sctk.uq.plugin's two, and installed packages'
MODEL_KINDS: Registry[ModelKind] = Registry("model kind", "model_kinds")

K = TypeVar("K")


def model_kind(kind: K) -> K:
    """Declare KIND (an object of the ModelKind shape) under its name."""
    MODEL_KINDS.add(kind.name, kind, type(kind).__module__)  # type: ignore[attr-defined]
    return kind


def kind_named(name: str) -> ModelKind:
    """The kind called NAME, or one sentence naming the kinds there are."""
    kind = MODEL_KINDS.get(str(name))
    if kind is None:
        raise SctkError(
            f"There is no model kind {str(name)[:60]!r}; the kinds are "
            f"{', '.join(sorted(MODEL_KINDS))}."
        )
    return kind


def kind_of(row: UqModel) -> ModelKind:
    """The kind of the model ROW registers."""
    return kind_named(row.kind)


def kind_for(model: Any) -> ModelKind:
    """The kind of the fitted estimator MODEL."""
    for kind in MODEL_KINDS.values():
        if kind.owns(model):
            return kind
    raise SctkError(f"A {type(model).__name__} is of no model kind sctk knows; it cannot be saved.")


def savable_params(model: Any) -> dict[str, Any]:
    """A fitted MODEL's parameters for its file, or one sentence saying why it cannot be
    saved (not fitted; a physics given as a Python object, which a file must not hold)."""
    if not hasattr(model, "calibrator_"):
        raise SctkError("Only a fitted model can be saved; call fit() first.")
    params = model.get_params()
    if params["physics"] is not None and not isinstance(params["physics"], str):
        raise SctkError(
            "A model whose physics is a Python object cannot be saved; pass physics as a "
            "registered 'package.module:function' name instead (sctk.uq.physics_registry)."
        )
    return params


def label(row: UqModel) -> str:
    return f"'{row.name}' v{row.version}"


def wrong_kind(row: UqModel, given: str) -> SctkError:
    """The sentence for inputs meant for another kind of model than ROW's."""
    return SctkError(
        f"Model {label(row)} is a {row.kind} model and predicts from {kind_of(row).takes}, "
        f"not from {given}."
    )
