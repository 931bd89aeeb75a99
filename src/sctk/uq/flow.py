"""The demo problem: 2D incompressible flow on the periodic square [0, 2 pi)^2.

The vorticity equation  w_t + u . grad w = nu lap w  is solved pseudo-spectrally with numpy's
FFT: the velocity comes from the stream function (lap psi = -w, u = psi_y, v = -psi_x), the
advection term is evaluated on the grid with 2/3-rule dealiasing, and time is stepped with a
fourth-order Runge-Kutta whose viscous part is integrated exactly (Lawson's integrating
factor), so the scheme is stable for any viscosity.

`make_pairs` draws seeded random initial fields and returns, for each, the velocity at t = 0
(the input), a cheap physics prediction at t_end (a coarse grid and a few large time steps)
and the accurate truth (a fine grid and many small steps, brought back to the coarse grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sctk.errors import SctkError

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class Grid:
    n: int

    def __post_init__(self) -> None:
        if self.n < 8 or self.n % 2:
            raise SctkError(f"The grid size must be an even number of at least 8; got {self.n}.")

    @property
    def dx(self) -> float:
        return TWO_PI / self.n

    def wavenumbers(self) -> tuple[np.ndarray, np.ndarray]:
        k = np.fft.fftfreq(self.n, d=1.0 / self.n)
        kx, ky = np.meshgrid(k, k, indexing="xy")  # rows: y, columns: x
        return kx, ky

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.arange(self.n) * self.dx
        x, y = np.meshgrid(c, c, indexing="xy")
        return x, y


class VorticitySolver:
    """Works on half spectra (numpy's rfft2): real fields need only half the modes, which
    halves the cost of every transform."""

    def __init__(self, grid: Grid, nu: float):
        if nu < 0:
            raise SctkError(f"The viscosity must not be negative; got {nu}.")
        self.grid, self.nu = grid, nu
        ky = np.fft.fftfreq(grid.n, d=1.0 / grid.n)
        kx = np.fft.rfftfreq(grid.n, d=1.0 / grid.n)
        self.kx, self.ky = np.meshgrid(kx, ky, indexing="xy")  # rows: y, columns: x
        self.k2 = self.kx**2 + self.ky**2
        self.k2_safe = np.where(self.k2 == 0, 1.0, self.k2)
        cutoff = grid.n / 3.0  # the 2/3 rule: drop modes whose products alias
        self.dealias = (np.abs(self.kx) < cutoff) & (np.abs(self.ky) < cutoff)

    def _real(self, f_hat: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(f_hat, s=(self.grid.n, self.grid.n))

    def velocity_hat(self, w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        psi_hat = w_hat / self.k2_safe
        psi_hat[..., 0, 0] = 0.0
        return 1j * self.ky * psi_hat, -1j * self.kx * psi_hat

    def velocity(self, w: np.ndarray) -> np.ndarray:
        """[..., 2, n, n] velocity (u, v) of the vorticity w [..., n, n]."""
        u_hat, v_hat = self.velocity_hat(np.fft.rfft2(w))
        return np.stack([self._real(u_hat), self._real(v_hat)], axis=-3)

    def _advection(self, w_hat: np.ndarray) -> np.ndarray:
        u_hat, v_hat = self.velocity_hat(w_hat)
        u, v = self._real(u_hat), self._real(v_hat)
        wx = self._real(1j * self.kx * w_hat)
        wy = self._real(1j * self.ky * w_hat)
        return -np.fft.rfft2(u * wx + v * wy) * self.dealias

    def run(self, w: np.ndarray, t_end: float, steps: int) -> np.ndarray:
        """Vorticity at t_end from w [..., n, n], in STEPS Runge-Kutta steps."""
        if steps < 1 or t_end < 0:
            raise SctkError("The solver needs at least one step and a non-negative end time.")
        dt = t_end / steps
        half = np.exp(-self.nu * self.k2 * dt / 2)
        full = half * half
        w_hat = np.fft.rfft2(w)
        for _ in range(steps):
            a = self._advection(w_hat)
            b = self._advection(half * (w_hat + dt / 2 * a))
            c = self._advection(half * w_hat + dt / 2 * b)
            d = self._advection(full * w_hat + dt * half * c)
            w_hat = full * w_hat + dt / 6 * (full * a + 2 * half * (b + c) + d)
        return self._real(w_hat)


def vorticity_of(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spectral vorticity dv/dx - du/dy of velocity components on the periodic grid."""
    n = u.shape[-1]
    kx, ky = Grid(n).wavenumbers()
    return np.fft.ifft2(1j * kx * np.fft.fft2(v) - 1j * ky * np.fft.fft2(u)).real


def random_vorticity(grid: Grid, rng: np.random.Generator, peak: float = 4.0) -> np.ndarray:
    """A smooth random field with its energy around wavenumber PEAK and unit RMS."""
    kx, ky = grid.wavenumbers()
    k = np.sqrt(kx**2 + ky**2)
    amplitude = k * np.exp(-((k / peak) ** 2))
    phase = np.fft.fft2(rng.standard_normal((grid.n, grid.n)))
    w = np.fft.ifft2(amplitude * phase).real
    return w / np.sqrt(np.mean(w**2))


def coarsen(w: np.ndarray, n: int) -> np.ndarray:
    """Spectral truncation of a fine periodic field to an n x n grid."""
    fine = w.shape[-1]
    if fine == n:
        return w
    w_hat = np.fft.fftshift(np.fft.fft2(w), axes=(-2, -1))
    lo = fine // 2 - n // 2
    cut = w_hat[..., lo : lo + n, lo : lo + n]
    return np.fft.ifft2(np.fft.ifftshift(cut, axes=(-2, -1))).real * (n * n) / (fine * fine)


@dataclass(frozen=True)
class FlowProblem:
    n: int = 32  # the grid the model sees
    fine: int = 64  # the grid of the truth
    nu: float = 0.01
    # two big steps over t = 2 leave the physics about 30% off the truth (RMS): useful, with
    # plenty left for the residual network to learn (measured in tests/uq/test_flow.py)
    t_end: float = 2.0
    coarse_steps: int = 2  # the cheap physics: big steps on the coarse grid
    # 32 RK4 steps already match 64 to 3e-6 RMS in vorticity (the coarse physics is off by
    # about 0.9): more only cost time
    fine_steps: int = 32


def make_pairs(
    samples: int, seed: int, problem: FlowProblem = FlowProblem()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, physics, truth), each [samples, 2, n, n] velocity fields, seeded."""
    if samples < 1:
        raise SctkError("Ask for at least one sample.")
    rng = np.random.default_rng(seed)
    coarse, fine = (
        VorticitySolver(Grid(problem.n), problem.nu),
        VorticitySolver(Grid(problem.fine), problem.nu),
    )
    w0_fine = np.stack([random_vorticity(Grid(problem.fine), rng) for _ in range(samples)])
    w0 = coarsen(w0_fine, problem.n)
    physics = coarse.run(w0, problem.t_end, problem.coarse_steps)
    truth = coarsen(fine.run(w0_fine, problem.t_end, problem.fine_steps), problem.n)
    return coarse.velocity(w0), coarse.velocity(physics), coarse.velocity(truth)


def coarse_physics(velocity: np.ndarray, problem: FlowProblem = FlowProblem()) -> np.ndarray:
    """The cheap physics S(x) of the demo: velocity [B, 2, n, n] at t = 0 -> at t_end."""
    velocity = np.asarray(velocity, dtype=np.float64)
    if velocity.ndim != 4 or velocity.shape[1] != 2:
        raise SctkError(f"Expected velocity fields [B, 2, n, n]; got {list(velocity.shape)}.")
    solver = VorticitySolver(Grid(velocity.shape[-1]), problem.nu)
    w = vorticity_of(velocity[:, 0], velocity[:, 1])
    return solver.velocity(solver.run(w, problem.t_end, problem.coarse_steps))
