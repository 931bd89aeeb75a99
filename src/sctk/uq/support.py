"""The values a discrete target takes, and interval bounds moved to the nearest of them.

Under the interval score (width plus 2 / alpha times each miss) each bound is scored by a
pinball loss, whose best value for a target on a support is a support value: between two
neighbouring support values the loss is linear in the bound, so one of the two scores better
than any point between them. Which one depends on the target's distribution there; the
nearest one is the estimate that assumes the learnt bound is off by less than half a step.
Coverage is never lowered: for a target on the support, moving a bound inward to the next
support value covers the same targets, and moving it outward covers more. The automatic
choice (sctk.uq.hybrid) keeps the move only where its validation rows score better with it
(measured on the tuning tables of benchmarks/tune_uq_tables.py: moving every bound inward
scored worse as often as better, the nearest value better or alike).

The support: every whole number from the least to the greatest training target when all of
them are whole; otherwise the training targets' distinct values, but only when a new target
is unlikely to be none of them (the Good-Turing estimate of that chance, the share of
training rows whose value no other row has, at most UNSEEN). A bound below the least value
moves up to it, one above the greatest down to it; an interval wholly outside that range
keeps its bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNSEEN = 0.01  # at most this chance that a new target is a value no training row had: a
# tenth of the misses alpha 0.1 allows, and a bound moved misses such a value only where it
# falls between the bound and the support value the bound moved to


@dataclass
class Support:
    low: float
    high: float
    values: np.ndarray | None = None  # sorted distinct values; None: every whole number

    @classmethod
    def of(cls, y: np.ndarray) -> Support | None:
        """The support of training targets Y, or None where they are not discrete."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.size == 0:
            return None
        low, high = float(y.min()), float(y.max())
        if np.all(y == np.round(y)):
            return cls(low, high)
        values, counts = np.unique(y, return_counts=True)
        if np.count_nonzero(counts == 1) > UNSEEN * y.size:
            return None
        return cls(low, high, values)

    def snap(self, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LOWER and UPPER each moved to the nearest support value (inward on a tie)."""
        lower = np.asarray(lower, dtype=np.float64)
        upper = np.asarray(upper, dtype=np.float64)
        lo_below, lo_above = self._around(lower)
        hi_below, hi_above = self._around(upper)
        lo = np.where(lower - lo_below < lo_above - lower, lo_below, lo_above)
        hi = np.where(hi_above - upper < upper - hi_below, hi_above, hi_below)
        # monotone rounding keeps lo <= hi; beyond the range there is nothing to move to
        keep = (lower <= self.high) & (upper >= self.low)
        return np.where(keep, lo, lower), np.where(keep, hi, upper)

    def _around(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The support values next below and next above X (X itself where it is one),
        clipped to the training range."""
        if self.values is None:
            below, above = np.floor(x), np.ceil(x)
        else:
            v = self.values
            below = v[np.maximum(np.searchsorted(v, x, side="right") - 1, 0)]
            above = v[np.minimum(np.searchsorted(v, x, side="left"), v.size - 1)]
        return np.clip(below, self.low, self.high), np.clip(above, self.low, self.high)

    # -- as plain values ---------------------------------------------------------------

    def state(self) -> dict:
        import torch

        out: dict = {"low": self.low, "high": self.high}
        if self.values is not None:
            out["values"] = torch.from_numpy(self.values.copy())
        return out

    @classmethod
    def from_state(cls, state: dict) -> Support:
        values = state.get("values")
        return cls(
            float(state["low"]),
            float(state["high"]),
            None if values is None else values.numpy().astype(np.float64),
        )
