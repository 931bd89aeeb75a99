"""The variance-aware scheduler of the hybrid weight alpha (physics share of the output).

When the residual network is unsure (mean predicted variance above `high`), lean on the
physics: alpha rises by `up`. When it is confident (below `low`), let the network speak:
alpha falls by `down`. Alpha always stays within [lower, upper].
"""

from __future__ import annotations

from dataclasses import dataclass

from sctk.errors import SctkError


@dataclass
class AlphaScheduler:
    alpha: float = 0.5
    lower: float = 0.05
    upper: float = 0.95
    high: float = 1.0
    low: float = 0.1
    up: float = 0.05
    down: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower <= self.upper <= 1.0:
            raise SctkError(
                f"Alpha bounds must satisfy 0 <= lower <= upper <= 1; got {self.lower}, "
                f"{self.upper}."
            )
        if self.low > self.high:
            raise SctkError(
                f"The low variance threshold ({self.low}) must not exceed the high one "
                f"({self.high})."
            )
        if self.up < 0 or self.down < 0:
            raise SctkError("The scheduler's up and down rates must not be negative.")
        self.alpha = min(max(self.alpha, self.lower), self.upper)

    def step(self, mean_variance: float) -> float:
        """Update alpha from the network's mean predicted variance; return the new alpha."""
        if mean_variance > self.high:
            self.alpha = min(self.upper, self.alpha + self.up)
        elif mean_variance < self.low:
            self.alpha = max(self.lower, self.alpha - self.down)
        return self.alpha
