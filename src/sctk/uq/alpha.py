"""The hybrid weight alpha (the physics share of the output) and its variance-aware scheduler.

When the residual network is unsure (mean predicted variance above `high`), lean on the
physics: alpha rises by `up`. When it is confident (below `low`), let the network speak:
alpha falls by `down`. Alpha always stays within [lower, upper].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

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


class HybridWeight:
    """The physics share alpha of a hybrid output, in one of three modes.

    learned: a bounded sigmoid of a trainable parameter; fixed: the given value; scheduled:
    moved between epochs by an AlphaScheduler. With no physics (ACTIVE false) it is 0.
    """

    MODES = ("learned", "fixed", "scheduled")

    def __init__(
        self,
        alpha: float,
        mode: str,
        bounds: tuple[float, float],
        scheduler: dict[str, float] | None,
        active: bool,
    ):
        if mode not in self.MODES:
            raise SctkError(f"Unknown alpha_mode '{mode}'; use one of {', '.join(self.MODES)}.")
        lo, hi = bounds
        if not 0.0 <= lo <= hi <= 1.0:
            raise SctkError(f"alpha_bounds must satisfy 0 <= low <= high <= 1; got {lo}, {hi}.")
        self.mode, self.lo, self.hi, self.active = mode, lo, hi, active
        start = min(max(alpha, lo + 1e-6), hi - 1e-6) if hi > lo else lo
        ratio = (start - lo) / (hi - lo) if hi > lo else 0.5
        self.raw = torch.nn.Parameter(torch.tensor(math.log(ratio / (1 - ratio))))
        self.now = alpha
        self.scheduler = (
            AlphaScheduler(alpha=alpha, lower=lo, upper=hi, **(scheduler or {}))
            if mode == "scheduled"
            else None
        )

    def value(self) -> torch.Tensor:
        if not self.active:
            return torch.tensor(0.0)
        if self.mode == "learned":
            return self.lo + (self.hi - self.lo) * torch.sigmoid(self.raw)
        return torch.tensor(float(self.now))

    def trainable(self) -> list[torch.nn.Parameter]:
        return [self.raw] if self.active and self.mode == "learned" else []

    def after_epoch(self, mean_variance: float) -> None:
        if self.scheduler is not None:
            self.now = self.scheduler.step(mean_variance)

    def snapshot(self) -> tuple[torch.Tensor, float]:
        return self.raw.detach().clone(), self.now

    def restore(self, snap: tuple[torch.Tensor, float]) -> None:
        self.raw = torch.nn.Parameter(snap[0])
        self.now = snap[1]

    def __float__(self) -> float:
        return float(self.value().detach())
