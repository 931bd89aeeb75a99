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

    def forward_with_input_gradient(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu, log sigma, d mu / d x) in one pass, without autograd.

        Psi needs the input gradient of every predicted row; autograd would build a graph and
        run a full backward pass (3x the cost of a forward one, measured). Carrying the
        SiLU derivatives through the chain rule by hand costs about one more forward pass.
        """
        pre_activations: list[torch.Tensor] = []
        linears: list[nn.Linear] = []
        z = x
        for layer in self.body:
            if isinstance(layer, nn.Linear):
                linears.append(layer)
                z = layer(z)
            else:
                pre_activations.append(z)
                z = layer(z)
        mean = self.mean(z).squeeze(-1)
        log_sigma = self.log_sigma(z).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX).squeeze(-1)
        grad = self.mean.weight.expand(x.shape[0], -1)  # d mu / d z_last, one row per sample
        for layer, pre in zip(reversed(linears), reversed(pre_activations), strict=True):
            # silu_backward multiplies by the SiLU slope at PRE in one fused kernel
            grad = torch.ops.aten.silu_backward(grad, pre) @ layer.weight
        return mean, log_sigma, grad


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
        return self.mean(z), clamp_passing_gradient(self.log_sigma(z))


def clamp_passing_gradient(raw: torch.Tensor) -> torch.Tensor:
    """RAW clamped to [LOG_SIGMA_MIN, LOG_SIGMA_MAX] in value, but with the gradient of the
    identity (a straight-through clamp).

    A plain clamp has zero gradient outside its bounds: a pixel whose log sigma once crossed
    the upper bound was never pulled back, and its raw value drifted with the shared weights
    (measured on the flow demo: 2% of the training pixels stuck at sigma = e^3 x the target
    scale, raw values up to 460, some test fields' intervals 100 times the typical width).
    Passed straight through, the NLL's gradient (1 - r^2 / sigma^2 for log sigma) brings
    them back."""
    clamped = raw.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    return raw + (clamped - raw).detach()
