"""Column statistics gathered batch by batch that do not depend on where the batches end.

A pipeline's normalise step is fitted over all the rows it sees, read a batch at a time. A
sum added up batch by batch rounds differently for every batching, so the fitted mean and
standard deviation (and with them every scaled value stored) would change with the batch
size. Here the sums are exact: each is held as a short list of floats whose exact total is
the exact sum (math.fsum's own representation, grown one batch at a time), and the square
of each value is split into two floats whose sum is exact (Dekker's product). The mean and
the population variance are then the correctly rounded values of the exact ones, the same
for any batching, and the variance is free of the cancellation of sum-of-squares formulas.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_SPLIT = 134217729.0  # 2**27 + 1: splits a double into two halves of 26 bits


class ExactSum:
    """The exact sum of every value added, kept as non-overlapping floats."""

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, values: np.ndarray) -> None:
        if not len(values):
            return
        terms = [*self.partials, *values.tolist()]
        kept: list[float] = []
        while True:
            # each round takes off the correctly rounded rest: a few rounds leave nothing
            rest = math.fsum([*terms, *(-k for k in kept)])
            if not math.isfinite(rest):
                kept = [rest]
                break
            if rest == 0.0:
                break
            kept.append(rest)
        self.partials = kept

    def exact(self) -> Fraction:
        if any(not math.isfinite(p) for p in self.partials):
            return Fraction(0)
        return sum((Fraction(p) for p in self.partials), Fraction(0))

    def finite(self) -> bool:
        return all(math.isfinite(p) for p in self.partials)


def _square(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VALUES**2 as high + low parts whose sum is exact (no overflow assumed)."""
    high = values * values
    scaled = _SPLIT * values
    top = scaled - (scaled - values)
    bottom = values - top
    low = ((top * top - high) + 2.0 * top * bottom) + bottom * bottom
    return high, low


class Moments:
    """Count, exact sum and sum of squares, minimum and maximum of a column's numbers
    (missing values left out, as pandas' mean, std, min and max leave them)."""

    def __init__(self) -> None:
        self.count = 0
        self.total = ExactSum()
        self.squares = ExactSum()
        self.low = math.inf
        self.high = -math.inf

    def add(self, values: np.ndarray, squares: bool = True) -> None:
        values = values[~np.isnan(values)]
        if not len(values):
            return
        self.count += len(values)
        self.total.add(values)
        if squares:
            with np.errstate(all="ignore"):
                high, low = _square(values)
            self.squares.add(np.concatenate([high, low]))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def mean(self) -> float:
        if not self.count:
            return math.nan
        if not self.total.finite():
            return math.fsum(self.total.partials) / self.count
        return float(self.total.exact() / self.count)

    def std(self) -> float:
        """The population standard deviation (ddof=0)."""
        if not self.count:
            return math.nan
        if not (self.total.finite() and self.squares.finite()):
            return math.nan
        mean = self.total.exact() / self.count
        variance = self.squares.exact() / self.count - mean * mean
        return math.sqrt(float(max(variance, Fraction(0))))
