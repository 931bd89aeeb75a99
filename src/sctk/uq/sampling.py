"""A seeded sample of a dataset too large to train on, stratified on its target, drawn by
reading the dataset a batch at a time.

`uq train` on a dataset of more rows than uq.train_row_budget trains on a sample of that
many rows. The target's range is cut into STRATA bins of about equal counts (quantiles of
a first, small sample), and each bin gives the sample its share of rows, so that the tails
of the target are represented as in the whole. Which rows a bin gives is decided by a
seeded hash of each row's position: the rows of least hash in each bin. Memory holds the
target's bins and hashes of the rows kept (a few bytes a row), then the sample itself; the
dataset is never read whole. The same dataset, budget and seed give the same sample.

Passes over the data: three over the target column alone (the quantiles, the count of each
bin, the rows kept), one over the feature and target columns (the rows kept, in order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

STRATA = 10  # bins of the target: deciles
EDGE_SAMPLE = 65_536  # rows the quantiles are taken from

Batches = Callable[[list[str]], Iterable[pd.DataFrame]]


@dataclass
class Sample:
    frame: pd.DataFrame  # the rows kept, in the dataset's order
    rows: int  # of the dataset
    seed: int
    sha256: str  # of the positions of the rows kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": len(self.frame),
            "of": self.rows,
            "seed": self.seed,
            "strata": STRATA,
            "sha256": self.sha256,
        }

    def sentence(self) -> str:
        rows, seed = len(self.frame), self.seed
        return f"trained on a sample of {rows:,} of {self.rows:,} rows (seed {seed})"


def priorities(start: int, count: int, seed: int) -> np.ndarray:
    """A seeded hash of positions START .. START+COUNT-1 in [0, 1) (splitmix64)."""
    key = int.from_bytes(hashlib.sha256(f"sctk-sample-{seed}".encode()).digest()[:8], "little")
    h = np.arange(start, start + count, dtype=np.uint64) ^ np.uint64(key)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _least(keys: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The K entries of least KEYS (and their VALUES)."""
    if len(keys) <= k:
        return keys, values
    chosen = np.argpartition(keys, k - 1)[:k]
    return keys[chosen], values[chosen]


def _targets(batches: Batches, target: str) -> Iterable[tuple[int, np.ndarray]]:
    start = 0
    for frame in batches([target]):
        values = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
        yield start, values
        start += len(values)


def stratified(batches: Batches, columns: list[str], target: str, size: int, seed: int) -> Sample:
    """SIZE rows of the data BATCHES(columns) yields, stratified on TARGET's quantiles."""
    # 1. quantiles of the target, from the rows of least hash
    keys = np.zeros(0)
    kept = np.zeros(0)
    rows = 0
    for start, values in _targets(batches, target):
        p = priorities(start, len(values), seed)
        keys, kept = _least(np.concatenate([keys, p]), np.concatenate([kept, values]), EDGE_SAMPLE)
        rows = start + len(values)
    finite = kept[np.isfinite(kept)]
    edges = np.unique(np.quantile(finite, np.arange(1, STRATA) / STRATA)) if len(finite) else []

    def bins(values: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, values, side="right")  # NaN: the last bin

    # 2. the rows of each bin, and each bin's share of the sample (largest remainder)
    counts = np.zeros(len(edges) + 1, dtype=np.int64)
    for _, values in _targets(batches, target):
        counts += np.bincount(bins(values), minlength=len(counts))
    quotas_f = counts * (size / max(rows, 1))
    quotas = np.floor(quotas_f).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda i: (-(quotas_f[i] - quotas[i]), i))
    for i in order[: max(size - int(quotas.sum()), 0)]:
        quotas[i] += 1
    quotas = np.minimum(quotas, counts)

    # 3. the rows of least hash in each bin
    chosen_keys = [np.zeros(0) for _ in counts]
    chosen_rows = [np.zeros(0, dtype=np.int64) for _ in counts]
    for start, values in _targets(batches, target):
        p = priorities(start, len(values), seed)
        where = bins(values)
        positions = np.arange(start, start + len(values), dtype=np.int64)
        for b in np.unique(where):
            mine = where == b
            chosen_keys[b], chosen_rows[b] = _least(
                np.concatenate([chosen_keys[b], p[mine]]),
                np.concatenate([chosen_rows[b], positions[mine]]),
                int(quotas[b]),
            )
    picked = np.sort(np.concatenate(chosen_rows))
    digest = hashlib.sha256(picked.astype("<i8").tobytes()).hexdigest()

    # 4. those rows, in order
    parts = []
    start = 0
    for frame in batches(columns):
        lo, hi = np.searchsorted(picked, [start, start + len(frame)])
        if hi > lo:
            parts.append(frame.iloc[picked[lo:hi] - start])
        start += len(frame)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return Sample(frame, rows, seed, digest)
