"""A fitted HybridRegressor's learnt parts as plain values (tensors, numbers, strings) and back.

Used by sctk.uq.registry for the model file. A model saved before the boosted learners and
the `method` setting (an MLP with a normalised or plain split calibration) has no 'method'
key: it reads back as 'mlp-normalised' or 'mlp-plain', as it was trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sctk.uq import scores as conformity
from sctk.uq.alpha import HybridWeight
from sctk.uq.hybrid import LEARNER, HybridRegressor, _Scaling
from sctk.uq.networks import ResidualMLP
from sctk.uq.support import Support
from sctk.uq.trees import TreeEnsemble


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float64, copy=True))


def learner_state(model: HybridRegressor) -> dict[str, Any]:
    """The learnt parts of MODEL (or of one CV+ member): scaling, network or trees."""
    s = model.scaling_
    state: dict[str, Any] = {
        "method": model.method_,
        "scaling": {
            "x_mean": _tensor(s.x_mean),
            "x_std": _tensor(s.x_std),
            "y_mean": float(s.y_mean),
            "y_std": float(s.y_std),
        },
        "alpha": float(model.alpha_),
    }
    if model.folds_:  # the members hold the learnt parts
        return state
    if LEARNER[model.method_] == "mlp":
        snap_raw, snap_now = model.weight_.snapshot()
        state["network"] = dict(model.net_.state_dict())
        state["weight"] = {"raw": snap_raw, "now": float(snap_now)}
    else:
        state["trees"] = {name: t.state() for name, t in model.trees_.items()}
    return state


def calibrator_state(model: HybridRegressor) -> dict[str, Any]:
    cal = model.calibrator_
    score = model.score_
    out: dict[str, Any] = {
        "normalized": score.name == "normalised",  # what a file of the first form said
        "score": score.name,
        "z": float(getattr(score, "z", 0.0)),
    }
    if isinstance(cal, conformity.SidedCalibrator):
        out["lower"], out["upper"] = _tensor(cal.lower_), _tensor(cal.upper_)
        out["groups"] = {g: [_tensor(lo), _tensor(hi)] for g, (lo, hi) in cal.groups_.items()}
    elif isinstance(cal, conformity.SidedCrossCalibrator):
        out["fold_lower"] = [_tensor(s) for s in cal.fold_lower]
        out["fold_upper"] = [_tensor(s) for s in cal.fold_upper]
    elif isinstance(cal, conformity.CrossCalibrator):
        out["fold_scores"] = [_tensor(s) for s in cal.fold_scores]
        out["fold_groups"] = [{g: _tensor(v) for g, v in fg.items()} for fg in cal.fold_groups]
    else:
        out["scores"] = _tensor(cal.scores_)
        out["groups"] = {g: _tensor(v) for g, v in cal.groups_.items()}
    return out


def full_state(model: HybridRegressor) -> dict[str, Any]:
    """Everything model_state() adds to the parameters: learner, calibration, choice."""
    state = learner_state(model)
    state["mode"] = model.mode_
    state["calibrator"] = calibrator_state(model)
    state["selection"] = _plain(model.selection_)
    support = getattr(model, "support_", None)
    if support is not None:  # the choice drew the bounds in to a discrete target's values
        state["support"] = support.state()
    if model.folds_:
        state["folds"] = [learner_state(m) for m in model.folds_]
    return state


def _plain(value: Any) -> Any:
    """SELECTION as str / float / int / dict / list only (what weights_only loading reads)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def restore_learner(model: HybridRegressor, state: dict[str, Any]) -> None:
    sc = state["scaling"]
    model.scaling_ = _Scaling(
        sc["x_mean"].numpy(), sc["x_std"].numpy(), float(sc["y_mean"]), float(sc["y_std"])
    )
    model.alpha_ = float(state["alpha"])
    model.trees_ = {}
    if "network" in state:
        width = model.n_features_in_ + (1 if model.physics_fn_ is not None else 0)
        model.net_ = ResidualMLP(width, model.hidden)
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
    for name, tree_state in (state.get("trees") or {}).items():
        model.trees_[name] = TreeEnsemble.from_state(tree_state, model.threads)


def restore(model: HybridRegressor, state: dict[str, Any]) -> None:
    """Set MODEL's learnt attributes from STATE (either form)."""
    cal = state["calibrator"]
    if "method" not in state:  # a file of the first form: an MLP, split calibration
        state = {**state, "method": "mlp-normalised" if cal["normalized"] else "mlp-plain"}
    model.method_ = state["method"]
    model.mode_ = state.get("mode", "split")
    model.selection_ = state.get("selection") or {"chosen": model.method_, "reason": "given"}
    support = state.get("support")
    model.support_ = None if support is None else Support.from_state(support)
    name = cal.get("score") or ("normalised" if cal["normalized"] else "plain")
    model.score_ = conformity.make_score(name, cal.get("z") or None)
    restore_learner(model, state)
    model.folds_ = []
    for fold_state in state.get("folds") or []:
        member = model._fold_model(model.method_)
        restore_learner(member, fold_state)
        model.folds_.append(member)
    if "lower" in cal:
        model.calibrator_ = conformity.SidedCalibrator(
            score=model.score_,
            lower_=cal["lower"].numpy(),
            upper_=cal["upper"].numpy(),
            groups_={g: (v[0].numpy(), v[1].numpy()) for g, v in (cal.get("groups") or {}).items()},
        )
    elif "fold_lower" in cal:
        model.calibrator_ = conformity.SidedCrossCalibrator(
            model.score_,
            [s.numpy() for s in cal["fold_lower"]],
            [s.numpy() for s in cal["fold_upper"]],
        )
    elif "fold_scores" in cal:
        model.calibrator_ = conformity.CrossCalibrator(
            model.score_,
            [s.numpy() for s in cal["fold_scores"]],
            [{g: v.numpy() for g, v in fg.items()} for fg in cal.get("fold_groups") or []],
        )
    else:
        model.calibrator_ = conformity.SplitCalibrator(
            scores_=cal["scores"].numpy(),
            score=model.score_,
            groups_={g: v.numpy() for g, v in (cal.get("groups") or {}).items()},
        )
