"""The demo flow solver against exact solutions."""

from __future__ import annotations

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.uq.flow import FlowProblem, Grid, VorticitySolver, coarsen, make_pairs, vorticity_of


def test_taylor_green_decays_exactly_as_exp_minus_2_nu_t():
    grid = Grid(32)
    x, y = grid.coords()
    w0 = 2 * np.sin(x) * np.sin(y)
    nu, t = 0.1, 1.5
    w = VorticitySolver(grid, nu).run(w0, t, steps=30)
    assert np.max(np.abs(w - w0 * np.exp(-2 * nu * t))) < 1e-10


def test_velocity_of_taylor_green_and_back():
    grid = Grid(32)
    x, y = grid.coords()
    solver = VorticitySolver(grid, 0.0)
    velocity = solver.velocity(2 * np.sin(x) * np.sin(y))
    assert np.allclose(velocity[0], np.sin(x) * np.cos(y), atol=1e-12)
    assert np.allclose(velocity[1], -np.cos(x) * np.sin(y), atol=1e-12)
    assert np.allclose(vorticity_of(velocity[0], velocity[1]), 2 * np.sin(x) * np.sin(y))


def test_inviscid_flow_keeps_its_energy():
    rng = np.random.default_rng(0)
    from sctk.uq.flow import random_vorticity

    grid = Grid(32)
    solver = VorticitySolver(grid, 0.0)
    w0 = random_vorticity(grid, rng)
    w1 = solver.run(w0, 0.5, steps=100)
    e0 = np.mean(solver.velocity(w0) ** 2)
    e1 = np.mean(solver.velocity(w1) ** 2)
    assert abs(e1 - e0) / e0 < 1e-3


def test_coarsening_keeps_the_modes_both_grids_hold():
    fine, coarse = Grid(64), Grid(32)
    xf, yf = fine.coords()
    xc, yc = coarse.coords()
    field = np.sin(3 * xf) * np.cos(2 * yf)
    assert np.allclose(coarsen(field, 32), np.sin(3 * xc) * np.cos(2 * yc), atol=1e-12)


def test_pairs_are_seeded_and_the_physics_is_close_but_not_exact():
    problem = FlowProblem(n=16, fine=32, fine_steps=16)
    a = make_pairs(4, seed=1, problem=problem)
    b = make_pairs(4, seed=1, problem=problem)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    inputs, physics, truth = a
    assert inputs.shape == physics.shape == truth.shape == (4, 2, 16, 16)
    error = np.sqrt(np.mean((physics - truth) ** 2))
    change = np.sqrt(np.mean((inputs - truth) ** 2))
    assert 0 < error < change  # the physics helps, and leaves something to learn


def test_bad_parameters_are_refused():
    with pytest.raises(SctkError, match="even number"):
        Grid(7)
    with pytest.raises(SctkError, match="viscosity"):
        VorticitySolver(Grid(16), -1.0)
