"""A fitted FieldHybridRegressor as a dict of plain values and tensors, and back.

The registry saves this dict with torch.save and loads it with weights_only=True: nothing in
it is executable. The physics is kept by its registered 'package.module:function' name and
looked up in sctk.uq.physics_registry on load (never imported as the file names it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sctk.errors import SctkError
from sctk.uq.alpha import HybridWeight
from sctk.uq.conformal import ConformalCalibrator
from sctk.uq.field_hybrid import FieldHybridRegressor
from sctk.uq.hybrid import resolve_physics
from sctk.uq.model_kind import savable_params
from sctk.uq.networks import ResidualCNN

FORMAT = 1
KIND = "field"


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64, copy=True))


def jsonable_params(model: FieldHybridRegressor) -> dict[str, Any]:
    """The model's parameters as JSON values (for the registry row's config)."""
    params = model.get_params()
    params["alpha_bounds"] = list(params["alpha_bounds"])
    if params.get("physics") is not None and not isinstance(params["physics"], str):
        params["physics"] = repr(params["physics"])
    return params


def model_state(model: FieldHybridRegressor) -> dict[str, Any]:
    params = savable_params(model)
    params["alpha_bounds"] = list(params["alpha_bounds"])
    raw, now = model.weight_.snapshot()
    return {
        "format": FORMAT,
        "kind": KIND,
        "params": params,
        "shape": [int(v) for v in model.shape_],
        "scale": float(model.scale_),
        "network": dict(model.net_.state_dict()),
        "weight": {"raw": raw, "now": float(now)},
        "alpha": float(model.alpha_),
        "lambda1": float(model.lambda1_),
        "lambda2": float(model.lambda2_),
        "calibrator": {
            "normalized": bool(model.calibrator_.normalized),
            "scores": _tensor(model.calibrator_.scores_),
        },
        "history": [dict(h) for h in getattr(model, "history_", [])],
    }


def model_from_state(state: dict[str, Any]) -> FieldHybridRegressor:
    if state.get("format") != FORMAT or state.get("kind") != KIND:
        raise SctkError("The model file is not a field sctk model of a known format.")
    params = dict(state["params"])
    params["alpha_bounds"] = tuple(params["alpha_bounds"])
    model = FieldHybridRegressor(**params)
    model.physics_fn_ = resolve_physics(model.physics)
    model.shape_ = tuple(int(v) for v in state["shape"])
    model.scale_ = float(state["scale"])
    model.net_ = ResidualCNN(model.shape_[0], model.width, model.depth)
    model.net_.load_state_dict(state["network"])
    model.net_.eval()
    model.weight_ = HybridWeight(
        model.alpha,
        model.alpha_mode,
        model.alpha_bounds,
        model.scheduler,
        active=model.physics_fn_ is not None,
    )
    model.weight_.restore((state["weight"]["raw"], float(state["weight"]["now"])))
    model.alpha_ = float(state["alpha"])
    model.lambda1_ = float(state["lambda1"])
    model.lambda2_ = float(state["lambda2"])
    cal = state["calibrator"]
    model.calibrator_ = ConformalCalibrator(
        normalized=bool(cal["normalized"]), scores_=cal["scores"].numpy()
    )
    model.history_ = list(state.get("history", []))
    return model
