"""Predicting with a registered model: the one path the API and the CLI share.

The model's kind (sctk.uq.model_kind) turns the data into inputs and checks them; in
adaptive conformal mode the alpha moved by recent observations is used (`alpha_used`); the
arrays come from the prediction cache when it holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.storage.models import UqModel
from sctk.uq import registry
from sctk.uq.conformal import check_alpha
from sctk.uq.model_kind import kind_of


def predict(
    session: Session,
    home: Path,
    row: UqModel,
    X: Any,
    alpha: float = 0.1,
    cache: Any = None,
    what: str = "The input",
) -> dict[str, Any]:
    """Model ROW's means, intervals at ALPHA, sigma and psi for inputs X, as JSON values."""
    kind = kind_of(row)
    alpha = check_alpha(alpha)
    X = kind.check(row, X, what)
    used = alpha
    if kind.observes:
        from sctk.uq.adaptive_alpha import effective_alpha

        used = effective_alpha(session, row, alpha)  # alpha_t in adaptive mode
    return {**cached(home, row, X, used, cache), "alpha": alpha, "alpha_used": used}


def predict_frame(
    session: Session,
    home: Path,
    row: UqModel,
    frame: pd.DataFrame,
    alpha: float = 0.1,
    cache: Any = None,
    what: str = "The input",
) -> dict[str, Any]:
    """As `predict`, for the inputs a stored dataset's FRAME holds (rows of feature columns,
    or one flattened field per row)."""
    X = kind_of(row).inputs(row, frame, what)
    return predict(session, home, row, X, alpha, cache, what)


def cached(home: Path, row: UqModel, X: np.ndarray, alpha: float, cache: Any) -> dict[str, Any]:
    """The prediction of checked inputs X at ALPHA; the arrays come from CACHE when it holds
    them (rendering after the cache keeps its entries compact: arrays, not lists)."""
    key = out = None
    if cache is not None:
        from sctk.uq.cache import input_digest

        key = (row.id, input_digest(X, row.sha256), alpha)
        out = cache.get(key)
    hit = out is not None
    if not hit:
        out = registry.load(home, row).predict_interval(X, alpha=alpha)
        if key is not None:
            cache.put(key, out)
    return {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "kind": row.kind,
        "alpha": alpha,
        "rows": int(X.shape[0]),
        **kind_of(row).render(X, out),
        "cached": hit,
    }
