"""Whole-ensemble prediction by lookup tables: every row's leaf in every tree at once.

The compiled walker of scikit-learn visits one row in one tree at a time (~50 ns a row and
tree, measured on randhie), so a three-ensemble CQR model spent all of predict_interval
there. Here each tree's leaves are numbered left to right and each split node gets a bit
mask: every leaf but those of its left subtree. A row's leaf in a tree is the lowest bit left
after ANDing the masks of the nodes it does not go left at (the QuickScorer idea). Whether a
row goes left depends only on where its value falls among the ensemble's thresholds on that
feature, so per feature one table maps that rank to the AND of masks over all trees; a few
features with small tables are merged into one (the product of their ranks), and a row's
leaves in all trees come from one table row per feature group, ANDed.

Exactness: ranks compare as the thresholds do (value <= threshold goes left), a missing value
has its own rank that follows each node's missing_go_to_left, and leaf values are summed onto
the baseline tree by tree in order, the sum the walker makes; the tests compare with the
booster. Ensembles the tables do not cover (categorical splits, over 64 leaves in a tree)
return None and keep the walker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# rows of the (rows x trees) working arrays at a time: 2k rows of a 200-tree ensemble is
# ~3 MB of uint64; 2-4k measured fastest on randhie (8k and more fall out of cache)
BLOCK_ROWS = 2048
# a feature group's table holds at most this many rank combinations (x trees x 8 bytes)
GROUP_LIMIT = 2048
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass
class _Group:
    features: list[int]
    thresholds: list[np.ndarray]  # sorted distinct thresholds of each feature
    strides: list[int]  # rank of feature i counts strides[i] rows of the table
    table: np.ndarray  # (combinations, trees) once compiled uint64: leaves still possible


@dataclass
class CompiledTrees:
    baseline: float
    groups: list[_Group]
    leaf_values: np.ndarray  # (trees, 64) float64, leaves in left-to-right order
    n_trees: int
    max_feature: int  # the highest feature index a split reads (-1: none)

    def predict(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        out = np.empty(n)
        if self.n_trees == 0:
            out.fill(self.baseline)
            return out
        # a power of two 2^k as float64 has k + 1023 in its exponent bits: shifting them out
        # gives the leaf's position, offset here to index the flat (trees x 64) leaf values
        offsets = np.arange(self.n_trees, dtype=np.int64) * 64 - 1023
        flat_values = self.leaf_values.reshape(-1)
        indices = [_group_index(group, X) for group in self.groups]
        for start in range(0, n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n)
            acc = None
            for group, index in zip(self.groups, indices, strict=True):
                part = group.table[index[start:stop]]  # (rows, trees): one table row a row
                acc = part if acc is None else np.bitwise_and(acc, part, out=acc)
            if acc is None:  # no split anywhere: every tree is its root leaf
                acc = np.ones((stop - start, self.n_trees), dtype=np.uint64)
            np.bitwise_and(acc, np.uint64(0) - acc, out=acc)  # the lowest set bit: the leaf
            leaf = acc.astype(np.float64).view(np.int64)
            np.right_shift(leaf, 52, out=leaf)
            leaf += offsets
            values = np.empty((self.n_trees + 1, stop - start))
            values[0] = self.baseline
            values[1:] = flat_values.take(leaf).T
            # reduced along the slow axis numpy adds row after row (no pairwise sum): the
            # baseline plus tree 1 plus tree 2 ..., the walker's order
            np.add.reduce(values, axis=0, out=out[start:stop])
        return out


def _group_index(group: _Group, X: np.ndarray) -> np.ndarray:
    index = np.zeros(X.shape[0], dtype=np.int64)
    for f, thresholds, stride in zip(group.features, group.thresholds, group.strides, strict=True):
        column = X[:, f]
        # the count of thresholds below the value: value <= t_k exactly when rank <= k
        rank = np.searchsorted(thresholds, column, side="left")
        missing = np.isnan(column)
        if missing.any():
            rank[missing] = len(thresholds) + 1
        index += rank * stride
    return index


def compile_trees(baseline: float, nodes: list[np.ndarray]) -> CompiledTrees | None:
    """The tables for one ensemble, or None where they do not apply."""
    trees = len(nodes)
    leaf_values = np.zeros((trees, 64))
    per_feature: dict[int, list[tuple[int, float, bool, int]]] = {}
    for t, table in enumerate(nodes):
        if table["is_categorical"].any():
            return None
        order = _leaves_in_order(table)
        if len(order) > 64:
            return None
        pos = {node: i for i, node in enumerate(order)}
        leaf_values[t, : len(order)] = table["value"][order]
        for node in np.flatnonzero(table["is_leaf"] == 0):
            lo, hi = _leaf_span(table, int(table["left"][node]), pos)
            span = ((1 << hi) - 1) ^ ((1 << lo) - 1)
            mask = int(_ONES) & ~span
            per_feature.setdefault(int(table["feature_idx"][node]), []).append(
                (
                    t,
                    float(table["num_threshold"][node]),
                    bool(table["missing_go_to_left"][node]),
                    mask,
                )
            )
    tables = {}
    for f, splits in per_feature.items():
        thresholds = np.unique([s[1] for s in splits])
        k = len(thresholds)
        table = np.full((trees, k + 2), _ONES, dtype=np.uint64)
        for t, threshold, missing_left, mask in splits:
            rank = int(np.searchsorted(thresholds, threshold))
            m = np.uint64(mask)
            table[t, rank + 1 : k + 1] &= m  # ranks above the node's: the row goes right
            if not missing_left:
                table[t, k + 1] &= m
        tables[f] = (thresholds, table)
    groups = _merge(tables, trees)
    for group in groups:  # a row's masks over all trees side by side: gathered as one row
        group.table = np.ascontiguousarray(group.table.T)
    return CompiledTrees(baseline, groups, leaf_values, trees, max(per_feature, default=-1))


def _merge(tables, trees: int) -> list[_Group]:
    """Features in groups whose rank combinations stay under GROUP_LIMIT: fewer gathers."""
    groups: list[_Group] = []
    for f in sorted(tables, key=lambda f: tables[f][1].shape[1]):
        thresholds, table = tables[f]
        size = table.shape[1]
        last = groups[-1] if groups else None
        if last is not None and last.table.shape[1] * size <= GROUP_LIMIT:
            old = last.table.shape[1]
            # combination index = old index + old size * rank of f
            joined = last.table[:, None, :] & table[:, :, None]
            last.table = np.ascontiguousarray(joined.reshape(trees, size * old))
            last.features.append(f)
            last.thresholds.append(thresholds)
            last.strides.append(old)
        else:
            groups.append(_Group([f], [thresholds], [1], np.ascontiguousarray(table)))
    return groups


def _leaves_in_order(table: np.ndarray) -> list[int]:
    out, stack = [], [0]
    while stack:
        node = stack.pop()
        if table["is_leaf"][node]:
            out.append(node)
        else:  # right pushed first: the left subtree comes out first
            stack.append(int(table["right"][node]))
            stack.append(int(table["left"][node]))
    return out


def _leaf_span(table: np.ndarray, node: int, pos: dict[int, int]) -> tuple[int, int]:
    """[first, last + 1) of the in-order positions of the leaves under node."""
    first = last = node
    while not table["is_leaf"][first]:
        first = int(table["left"][first])
    while not table["is_leaf"][last]:
        last = int(table["right"][last])
    return pos[first], pos[last] + 1
