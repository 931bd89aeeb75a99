"""Gradient-boosted residual learners (scikit-learn's HistGradientBoostingRegressor), kept as
plain arrays.

A fitted booster is reduced to its trees' node tables, its baseline and its category maps:
numbers a model file can hold and `torch.load(weights_only=True)` can read back, so opening a
model never unpickles code. Prediction looks every row's leaves up in tables built from those
node tables (sctk.uq.tree_tables: all trees at once, 4-5x faster than walking them), or for
trees the tables do not cover runs scikit-learn's own compiled tree walker (`TreePredictor`),
the loop `HistGradientBoostingRegressor.predict` runs; either way a rebuilt ensemble predicts
exactly what the fitted booster did (checked in the tests). The node
table's layout is scikit-learn's; it is recorded with the trees and a file written by a
version with another layout is refused with a sentence rather than misread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sctk.errors import SctkError
from sctk.uq.tree_tables import compile_trees

# Written out so that a model records what it was fitted with. scikit-learn's defaults but
# for the leaves a tree: 7, not 31, chosen on the tuning tables of
# benchmarks/tune_uq_tables.py alone (RESULTS.md, "UQ: smaller trees"): sctk auto over the
# better MAPIE method, geometric mean / worst of 16 tables, 0.9792 / 0.9999 at 7 leaves,
# 0.9857 / 1.0035 at 15, 0.9894 / 1.0052 at 31; 3 lost on the larger tables. Leaves of a
# share of the rows for the quantile learners were tried and dropped (RESULTS.md, "UQ:
# quantile leaves by share of the rows"): better on the tuning tables, worse on randhie.
BOOST_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 100,
    "max_leaf_nodes": 7,
    "min_samples_leaf": 20,
}


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """OpenMP threads of the booster: as many as the model's `threads`, not every core."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, n), user_api="openmp"):
        yield


def _record_dtype() -> np.dtype:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    return PREDICTOR_RECORD_DTYPE


@dataclass
class TreeEnsemble:
    """The trees of one fitted booster, with what predicting from raw features needs."""

    baseline: float
    nodes: list[np.ndarray]  # one structured node table per tree
    raw_bitsets: list[np.ndarray]
    known_cat_bitsets: np.ndarray
    f_idx_map: np.ndarray
    threads: int = 1
    # the lookup tables of sctk.uq.tree_tables, built at the first predict (False: they do
    # not apply to these trees); derived from the node tables, so never saved
    _tables: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        loss: str,
        quantile: float | None,
        seed: int,
        threads: int = 1,
        **params: Any,
    ) -> TreeEnsemble:
        from sklearn.ensemble import HistGradientBoostingRegressor

        kwargs = {**BOOST_DEFAULTS, **params, "loss": loss, "random_state": seed}
        if quantile is not None:
            kwargs["quantile"] = quantile
        booster = HistGradientBoostingRegressor(**kwargs)
        with _threads(threads):
            booster.fit(X, y)
        known, f_idx = booster._bin_mapper.make_known_categories_bitsets()
        # private attributes of the booster, read once here: the trees and the baseline are
        # what its predict sums, and nothing else of the object is kept
        trees = [it[0] for it in booster._predictors]
        return cls(
            float(np.asarray(booster._baseline_prediction).reshape(-1)[0]),
            [t.nodes for t in trees],
            [t.raw_left_cat_bitsets for t in trees],
            known,
            f_idx,
            threads,
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if self._tables is None:
            self._tables = compile_trees(self.baseline, self.nodes) or False
        if self._tables is not False and X.shape[1] > self._tables.max_feature:
            return self._tables.predict(X)
        return self._walk(X)

    def _walk(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's compiled walker, tree by tree: for what the tables do not cover."""
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

        out = np.full(X.shape[0], self.baseline)
        empty = np.zeros((0, 8), dtype=np.uint32)
        for nodes, raw in zip(self.nodes, self.raw_bitsets, strict=True):
            out += TreePredictor(nodes, empty, raw).predict(
                X, self.known_cat_bitsets, self.f_idx_map, max(1, self.threads)
            )
        return out

    # -- as plain values -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        dtype = _record_dtype()
        return {
            "baseline": float(self.baseline),
            "layout": repr(dtype.descr),
            "nodes": [torch.from_numpy(n.view(np.uint8).copy()) for n in self.nodes],
            "raw_bitsets": [torch.from_numpy(r.astype(np.int64)) for r in self.raw_bitsets],
            "known": torch.from_numpy(self.known_cat_bitsets.astype(np.int64)),
            "f_idx": torch.from_numpy(self.f_idx_map.astype(np.int64)),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], threads: int = 1) -> TreeEnsemble:
        dtype = _record_dtype()
        if state["layout"] != repr(dtype.descr):
            raise SctkError(
                "The model's gradient-boosted trees were saved by a scikit-learn with another "
                "tree layout; train the model again with this installation."
            )
        return cls(
            float(state["baseline"]),
            [n.numpy().view(dtype).copy() for n in state["nodes"]],
            [r.numpy().astype(np.uint32) for r in state["raw_bitsets"]],
            state["known"].numpy().astype(np.uint32),
            state["f_idx"].numpy().astype(np.uint32),
            threads,
        )
