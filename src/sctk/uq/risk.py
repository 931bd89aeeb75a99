"""Risk penalties of field predictions and the confidence score Psi built from them.

R_cog (physical inconsistency): mean squared divergence plus the rotational roughness, the
mean squared gradient of the vorticity. R_eff (effort): the mean gradient magnitude of the
field. Psi = min(beta * exp(-(lambda1 * R_cog + lambda2 * R_eff)), 1): near 1 for smooth,
nearly incompressible predictions, falling towards 0 as they become implausible.
"""

from __future__ import annotations

import torch

from sctk.uq.operators import ddx, ddy, divergence, vorticity


def r_cog(field: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Per sample [B]: divergence^2 + |grad vorticity|^2, averaged over the grid."""
    div = divergence(field, dx, dy)
    w = vorticity(field, dx, dy)
    rough = ddx(w, dx) ** 2 + ddy(w, dy) ** 2
    return (div**2 + rough).mean(dim=(-2, -1))


def r_eff(field: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Per sample [B]: the mean gradient magnitude over both velocity components."""
    u, v = field[:, 0], field[:, 1]
    grad = ddx(u, dx) ** 2 + ddy(u, dy) ** 2 + ddx(v, dx) ** 2 + ddy(v, dy) ** 2
    return torch.sqrt(grad + 1e-12).mean(dim=(-2, -1))


def psi(
    cog: torch.Tensor,
    eff: torch.Tensor,
    beta: float = 1.0,
    lambda1: float = 1.0,
    lambda2: float = 0.1,
) -> torch.Tensor:
    """Confidence in [0, 1] from the two risks."""
    return torch.clamp(beta * torch.exp(-(lambda1 * cog + lambda2 * eff)), max=1.0)
