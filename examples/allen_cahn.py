r"""Allen-Cahn (reaction-diffusion), a PDE pihc does not ship: the PDE, its problem and a reference solver.

.. math::  u_t = D\, u_{xx} + r\, (u - u^3), \qquad x \in [0, 1) \text{ periodic}, \quad t \in [0, T].

From small random data the reaction drives u towards the stable states -1
and +1, separated by interfaces of width ~ sqrt(D / r).  Train it (from the
repository root)::

    pihc train --config examples/allen_cahn.yaml --out runs/allen-cahn
    pihc evaluate runs/allen-cahn
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import pihc
from pihc import derivatives

from .burgers import spectral_solve


class AllenCahn(pihc.PDE):
    """``F = u_t - diffusivity u_xx - rate (u - u^3)``: BDF2 in time, spectral in x."""

    diffusivity: float = 5e-3
    rate: float = 1.0

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("u", "u_t", "u_xx")

    def terms(self, u, grid):
        period = grid.axis("x").hi - grid.axis("x").lo
        u_t = derivatives.diff1_backward(u, 0, grid.spacing("t"))
        u_xx = derivatives.spectral_diff(u, 1, period, 2)
        return jnp.stack([u, u_t, u_xx], axis=-1)

    def residual(self, terms):
        u, u_t, u_xx = terms[..., 0], terms[..., 1], terms[..., 2]
        return u_t - self.diffusivity * u_xx - self.rate * (u - u**3)

    def check_grid(self, grid):
        if grid.names != ("t", "x") or not grid.axis("x").periodic:
            raise pihc.GridError(f"AllenCahn needs axes ('t', 'x') with x periodic, got {grid.names}")


class AllenCahnProblem(pihc.Problem):
    """Allen-Cahn from random smooth initial conditions of amplitude ``amplitude``.

    Attributes:
        diffusivity: D.
        rate: r, the reaction rate.
        t_end: T.
        amplitude: a bound on |u0|.
        modes: the initial condition's Fourier modes, 1 .. modes.
    """

    diffusivity: float = 5e-3
    rate: float = 1.0
    t_end: float = 1.0
    amplitude: float = 0.5
    modes: int = 3

    @property
    def pde(self) -> AllenCahn:
        return AllenCahn(self.diffusivity, self.rate)

    def grid(self, shape):
        nt, nx = shape
        return pihc.Grid((pihc.Axis("t", nt, 0.0, self.t_end), pihc.Axis("x", nx, 0.0, 1.0, "periodic")))

    def initial_condition(self, seed, grid):
        rng = np.random.default_rng(seed)
        k = np.arange(1, self.modes + 1)
        a, phase = rng.normal(size=self.modes) / k, rng.uniform(0.0, 2 * np.pi, self.modes)
        x = grid.coords("x")[:, None]
        return self.amplitude * (a * np.cos(2 * np.pi * k * x + phase)).sum(1) / np.abs(a).sum()

    def solve(self, u0, grid):
        return spectral_solve(u0, grid, lambda u, ux: self.rate * (u - u**3), self.diffusivity)
