"""The physics diagnostics against an analytic Taylor-Green vortex."""

from __future__ import annotations

import math

import pytest
import torch

from sctk.errors import SctkError
from sctk.uq.operators import divergence, vorticity


def taylor_green(n: int) -> tuple[torch.Tensor, float]:
    """u = sin x cos y, v = -cos x sin y on [0, 2pi)^2: vorticity 2 sin x sin y, divergence 0."""
    h = 2 * math.pi / n
    coords = torch.arange(n, dtype=torch.float64) * h
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # rows are y, columns x
    u = torch.sin(x) * torch.cos(y)
    v = -torch.cos(x) * torch.sin(y)
    return torch.stack([u, v])[None], h


def exact_vorticity(n: int) -> torch.Tensor:
    h = 2 * math.pi / n
    coords = torch.arange(n, dtype=torch.float64) * h
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return 2 * torch.sin(x) * torch.sin(y)


def test_vorticity_is_second_order_accurate():
    errors = []
    for n in (16, 32, 64):
        field, h = taylor_green(n)
        errors.append(float((vorticity(field, h, h)[0] - exact_vorticity(n)).abs().max()))
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 3.6 < coarse / fine < 4.4, errors  # halving h quarters the error


def test_divergence_of_an_incompressible_field_vanishes():
    field, h = taylor_green(32)
    assert float(divergence(field, h, h).abs().max()) < 1e-12


def test_a_compressible_field_has_the_expected_divergence():
    # u = sin x, v = 0: du/dx = cos x; central differences give cos x * sin(h) / h
    n = 64
    h = 2 * math.pi / n
    x = torch.arange(n, dtype=torch.float64) * h
    u = torch.sin(x).expand(n, n)
    field = torch.stack([u, torch.zeros_like(u)])[None]
    expected = torch.cos(x) * math.sin(h) / h
    assert torch.allclose(divergence(field, h, h)[0], expected.expand(n, n), atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "fragment"), [((2, 32, 32), "shape"), ((1, 1, 32, 32), "shape"), ((1, 2, 2, 8), "3")]
)
def test_bad_fields_are_refused(shape, fragment):
    with pytest.raises(SctkError, match=fragment):
        vorticity(torch.zeros(shape), 0.1, 0.1)


def test_bad_spacing_is_refused():
    with pytest.raises(SctkError, match="positive"):
        divergence(torch.zeros(1, 2, 8, 8), 0.0, 0.1)
