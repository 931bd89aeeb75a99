"""Differential diagnostics of 2D velocity fields on a periodic grid.

Fields are tensors [B, C, H, W]: channel 0 is u (x-velocity), channel 1 is v (y-velocity);
x runs along W (spacing dx), y along H (spacing dy). Derivatives are second-order central
differences with periodic wrap-around, so they are exact for the grid's own Fourier modes up
to the factor sin(k h)/(k h) and their error falls as h**2.
"""

from __future__ import annotations

import torch

from sctk.errors import SctkError


def _check(field: torch.Tensor, dx: float, dy: float) -> None:
    if field.ndim != 4 or field.shape[1] < 2:
        raise SctkError(
            f"A velocity field must have shape [B, C>=2, H, W]; got {list(field.shape)}."
        )
    if field.shape[2] < 3 or field.shape[3] < 3:
        raise SctkError("A velocity field needs at least 3 grid points in each direction.")
    if not (dx > 0 and dy > 0):
        raise SctkError(f"Grid spacings must be positive; got dx={dx}, dy={dy}.")


def ddx(f: torch.Tensor, dx: float) -> torch.Tensor:
    """d/dx along the last axis, central and periodic."""
    return (torch.roll(f, -1, dims=-1) - torch.roll(f, 1, dims=-1)) / (2.0 * dx)


def ddy(f: torch.Tensor, dy: float) -> torch.Tensor:
    """d/dy along the second-to-last axis, central and periodic."""
    return (torch.roll(f, -1, dims=-2) - torch.roll(f, 1, dims=-2)) / (2.0 * dy)


def vorticity(field: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """dv/dx - du/dy, shape [B, H, W]."""
    _check(field, dx, dy)
    return ddx(field[:, 1], dx) - ddy(field[:, 0], dy)


def divergence(field: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """du/dx + dv/dy, shape [B, H, W]."""
    _check(field, dx, dy)
    return ddx(field[:, 0], dx) + ddy(field[:, 1], dy)
