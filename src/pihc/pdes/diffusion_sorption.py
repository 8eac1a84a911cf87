"""1D diffusion-sorption (PDEBench): u_t = D / R(u) u_xx."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..derivatives import diff1, diff2_ghost
from ..grid import Axis, Grid, GridError
from .base import PDE


class DiffusionSorption(PDE):
    r"""Diffusion with nonlinear (Freundlich) sorption, as in PDEBench.

    .. math::
        u_t = \frac{D}{R(u)} u_{xx}, \qquad
        R(u) = 1 + \frac{1 - \phi}{\phi} \rho_s k_f n_f (u + \epsilon)^{n_f - 1},

    on x in (0, 1), t in (0, T], with u(0, t) = 1 and, at the right end,
    PDEBench's outflow condition.  PDEBench's paper writes it u(1, t) = D u_x(1, t);
    its solver (whose data we must match) sets the right ghost value to
    D (u_{n-2} - u_{n-1}) / dx, i.e. -D u_x; we follow the solver.

    The spatial operator is PDEBench's cell-centred finite-volume Laplacian:
    the compact stencil closed by a left ghost cell held at ``boundary_value``
    and a right ghost cell equal to ``D (u_{n-2} - u_{n-1}) / dx``.  Using the
    data generator's own closure keeps the residual of the true data small
    (a low discretisation floor).  The boundary *rows* say the same thing in
    row form: the quadratic extrapolation of u to each ghost location equals
    the ghost value.

    Attributes:
        diffusivity: D, effective diffusion coefficient (PDEBench: 5e-4).
        porosity: phi, porosity of the medium (0.29).
        bulk_density: rho_s, dry bulk density (2880).
        freundlich_k: k_f, Freundlich parameter (3.5e-4); 0 switches sorption
            off and leaves the heat equation u_t = D u_xx.
        freundlich_n: n_f, Freundlich exponent (0.874).
        boundary_value: u at the left boundary (PDEBench's solubility, 1.0).
        regularisation: epsilon added to u in R(u) (PDEBench: 1e-6).  Since
            n_f < 1, u^(n_f - 1) is infinite at u = 0; epsilon keeps R finite.
        smoothing: width of the smooth clip of u at 0 in R(u) (see
            :meth:`positive_part`); a numerical setting, not a physical
            constant (0 = hard clip).
        time_accuracy: order (2 or 4) of the finite-difference u_t.
    """

    diffusivity: float | Array = 5e-4
    porosity: float | Array = 0.29
    bulk_density: float | Array = 2880.0
    freundlich_k: float | Array = 3.5e-4
    freundlich_n: float | Array = 0.874
    boundary_value: float | Array = 1.0
    regularisation: float | Array = 1e-6
    smoothing: float | Array = 1e-3
    time_accuracy: int = eqx.field(static=True, default=2)

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("u", "u_t", "u_xx")

    def positive_part(self, u: Float[Array, "..."]) -> Float[Array, "..."]:
        """max(u, 0), smoothed over a width ``smoothing`` (softplus).

        A negative u (possible for a network's basis) would give a NaN
        fractional power, so u is clipped at 0.  A hard clip leaves a kink at
        u = 0 where dR/du jumps from 0 to ~1e6; least-squares fits of an
        untrained basis get stuck on it (Levenberg-Marquardt cannot converge
        at a kink).  The softplus ``s log(1 + exp(u / s))`` is smooth and
        differs from u by less than ``s exp(-u / s)``: below 1e-7 for
        u >= 0.01 with the default s = 1e-3, i.e. only for concentrations far
        below PDEBench's.  ``smoothing = 0`` gives the hard clip.
        """
        if isinstance(self.smoothing, (int, float)) and self.smoothing == 0:
            return jnp.maximum(u, 0.0)
        s = self.smoothing
        return s * jax.nn.softplus(u / s)

    def retardation(self, u: Float[Array, "..."]) -> Float[Array, "..."]:
        """R(u) = 1 + (1 - phi)/phi rho_s k_f n_f (u + eps)^(n_f - 1)."""
        base = self.positive_part(u) + self.regularisation
        coeff = (1.0 - self.porosity) / self.porosity * self.bulk_density \
            * self.freundlich_k * self.freundlich_n
        return 1.0 + coeff * base ** (self.freundlich_n - 1.0)

    def check_grid(self, grid: Grid) -> None:
        if grid.names != ("t", "x"):
            raise GridError(f"diffusion-sorption needs axes ('t', 'x'), got {grid.names}")
        if grid.axis("x").kind != "cells":
            raise GridError("diffusion-sorption needs a cell-centred x axis (kind='cells')")
        if grid.axis("t").kind != "nodes":
            raise GridError("diffusion-sorption needs a time axis of kind 'nodes'")

    def _right_ghost(self, u, dx):
        return self.diffusivity * (u[..., -2] - u[..., -1]) / dx

    def terms(self, u: Float[Array, "nt nx"], grid: Grid) -> Float[Array, "nt nx 3"]:
        dt, dx = grid.spacing("t"), grid.spacing("x")
        u_t = diff1(u, 0, dt, order=self.time_accuracy)
        u_xx = diff2_ghost(u, 1, dx, self.boundary_value, self._right_ghost(u, dx))
        return jnp.stack([u, u_t, u_xx], axis=-1)

    def residual(self, terms: Float[Array, "*points 3"]) -> Float[Array, "*points"]:
        u, u_t, u_xx = terms[..., 0], terms[..., 1], terms[..., 2]
        return u_t - self.diffusivity / self.retardation(u) * u_xx

    def residual_domain(self, grid: Grid) -> np.ndarray:
        # The PDE holds for t > 0; at t = 0 the initial data (a constant below
        # 1) and the boundary value 1 disagree, so u_t is singular there.
        mask = np.ones(grid.shape, bool)
        mask[0] = False
        return mask

    def initial_rows(self, u: Float[Array, "nt nx"], u0: Float[Array, " nx"], grid: Grid
                     ) -> Float[Array, " nx"]:
        return u[0] - u0

    def initial_row_points(self, grid: Grid) -> np.ndarray:
        nx = grid.shape[1]
        return np.stack([np.zeros(nx, int), np.arange(nx)], axis=-1)

    def boundary_rows(self, u: Float[Array, "nt nx"], grid: Grid) -> Float[Array, " n_bc"]:
        dx = grid.spacing("x")
        v = u[1:]  # t > 0 (see residual_domain)
        # Quadratic extrapolation to the ghost cell: u_{-1} ~ 3u_0 - 3u_1 + u_2.
        left = 3.0 * v[:, 0] - 3.0 * v[:, 1] + v[:, 2] - self.boundary_value
        right = 3.0 * v[:, -1] - 3.0 * v[:, -2] + v[:, -3] - self._right_ghost(v, dx)
        return jnp.concatenate([left, right])

    def boundary_row_points(self, grid: Grid) -> np.ndarray:
        nt, nx = grid.shape
        t = np.arange(1, nt)
        left = np.stack([t, np.zeros_like(t)], -1)
        right = np.stack([t, np.full_like(t, nx - 1)], -1)
        return np.concatenate([left, right])


def diffusion_sorption_grid(nt: int = 101, nx: int = 1024, t_max: float = 500.0) -> Grid:
    """PDEBench's grid: ``nt`` times in [0, t_max], ``nx`` cells on (0, 1)."""
    return Grid((Axis("t", nt, 0.0, t_max, "nodes"), Axis("x", nx, 0.0, 1.0, "cells")))
