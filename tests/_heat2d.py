"""The tests' 2D+time periodic PDE: w_t + a w (w_x + w_y) = nu lap w on the unit torus.

With ``advection = 0`` it is the heat equation, whose Fourier modes decay
independently; its BDF2-in-time, spectral-in-space discretisation then has
an exact discrete solution computed here by a per-mode recurrence
(:func:`discrete_heat_solution`), independent of the library's stencils.
With ``advection != 0`` the residual is nonlinear (quadratic in the terms,
as Navier-Stokes' advection is).  Nothing in the library knows this PDE.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pihc.derivatives import diff1_backward, spectral_diff
from pihc.grid import Axis, Grid, GridError
from pihc.pdes.base import PDE


def torus_grid(nt: int, nx: int, ny: int, t_end: float = 0.5) -> Grid:
    return Grid((Axis("t", nt, 0.0, t_end, "nodes"), Axis("x", nx, 0.0, 1.0, "periodic"),
                 Axis("y", ny, 0.0, 1.0, "periodic")))


class Heat2D(PDE):
    """``w_t + advection * w (w_x + w_y) - viscosity * (w_xx + w_yy) = 0``; IC as rows at t = 0."""

    viscosity: float | Float[Array, ""] = 0.01
    advection: float | Float[Array, ""] = 0.0

    @property
    def term_names(self):
        return ("w", "w_t", "w_x", "w_y", "lap")

    def check_grid(self, grid: Grid) -> None:
        if grid.ndim != 3 or not (grid.axes[1].periodic and grid.axes[2].periodic):
            raise GridError(f"Heat2D needs a (t, x, y) grid periodic in x and y, got {grid.names}")

    def terms(self, u, grid):
        t, x, y = grid.axes
        w_t = diff1_backward(u, 0, t.spacing, order=2)
        w_x = spectral_diff(u, 1, x.hi - x.lo)
        w_y = spectral_diff(u, 2, y.hi - y.lo)
        lap = spectral_diff(u, 1, x.hi - x.lo, 2) + spectral_diff(u, 2, y.hi - y.lo, 2)
        return jnp.stack([u, w_t, w_x, w_y, lap], axis=-1)

    def residual(self, terms):
        w, w_t, w_x, w_y, lap = (terms[..., i] for i in range(5))
        return w_t + self.advection * w * (w_x + w_y) - self.viscosity * lap

    def residual_domain(self, grid):
        mask = np.ones(grid.shape, bool)
        mask[0] = False  # the first time level is the initial condition's
        return mask

    def initial_rows(self, u, u0, grid):
        return (u[0] - u0).ravel()

    def initial_row_points(self, grid):
        _, nx, ny = grid.shape
        i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        return np.stack([np.zeros(nx * ny, int), i.ravel(), j.ravel()], axis=-1)

    def boundary_rows(self, u, grid):
        return jnp.zeros((0,), u.dtype)

    def boundary_row_points(self, grid):
        return np.zeros((0, 3), int)


def discrete_heat_solution(u0: np.ndarray, grid: Grid, viscosity: float) -> np.ndarray:
    """The exact solution of :class:`Heat2D`'s discrete equations (advection 0): per Fourier mode
    with ``lam = -nu |k|^2``, BDF1 for the first step and BDF2 after, as ``diff1_backward`` rows read."""
    nt, nx, ny = grid.shape
    h = grid.axes[0].spacing
    kx = 2 * np.pi * np.fft.fftfreq(nx, 1.0 / nx)
    ky = 2 * np.pi * np.fft.fftfreq(ny, 1.0 / ny)
    lam = -viscosity * (kx[:, None] ** 2 + ky[None, :] ** 2)
    c = np.zeros((nt, nx, ny), complex)
    c[0] = np.fft.fft2(u0)
    c[1] = c[0] / (1 - h * lam)
    for i in range(2, nt):
        c[i] = (4 * c[i - 1] - c[i - 2]) / (3 - 2 * h * lam)
    return np.real(np.fft.ifft2(c, axes=(1, 2)))


def smooth_field(grid: Grid, rng: np.random.Generator, modes: int = 2) -> np.ndarray:
    """A random smooth field on the grid: low Fourier modes in (x, y), a quadratic in t."""
    m = grid.mesh()
    t = (m[..., 0] - grid.axes[0].lo) / (grid.axes[0].hi - grid.axes[0].lo)
    x, y = m[..., 1], m[..., 2]
    kx, ky = rng.integers(0, modes + 1, 2)
    a, b, c = rng.normal(size=3)
    return (1 + a * t + 0.3 * b * t ** 2) * np.cos(2 * np.pi * (kx * x + ky * y) + c) + 0.2 * rng.normal()


def initial_field(grid: Grid, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(grid.coords("x"), grid.coords("y"), indexing="ij")
    return (np.sin(2 * np.pi * x + rng.normal()) * np.cos(2 * np.pi * y) + 0.5 * np.cos(4 * np.pi * y + rng.normal())
            + 0.3 * np.sin(2 * np.pi * (x + y)))
