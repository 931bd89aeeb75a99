"""Residual networks with a heteroscedastic head: a mean correction and a log sigma."""

from __future__ import annotations

import torch
from torch import nn

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 3.0  # clamped: NLL training diverges without bounds


class ResidualMLP(nn.Module):
    """For feature vectors: inputs (plus the physics prediction as a feature) -> (mu, log sigma)."""

    def __init__(self, n_inputs: int, hidden: tuple[int, ...] = (64, 64)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(width, 1)
        self.log_sigma = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        log_sigma = self.log_sigma(z).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
        return self.mean(z).squeeze(-1), log_sigma.squeeze(-1)


class ResidualCNN(nn.Module):
    """For fields [B, C, H, W]: a small periodic CNN -> (mean [B, C, H, W], log sigma)."""

    def __init__(self, channels: int = 2, width: int = 32, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels * 2  # the input field and the physics prediction, stacked
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1, padding_mode="circular"), nn.SiLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.mean = nn.Conv2d(width, channels, 3, padding=1, padding_mode="circular")
        self.log_sigma = nn.Conv2d(width, channels, 3, padding=1, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.body(x)
        return self.mean(z), self.log_sigma(z).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
