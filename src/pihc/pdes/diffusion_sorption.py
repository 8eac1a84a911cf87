"""1D diffusion-sorption (PDEBench): R(u) u_t = D u_xx."""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..derivatives import diff1, diff1_backward, diff2_ghost
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

    The residual is written multiplied through by R (``residual_form``), with
    a backward (BDF2) time difference (``time_stencil``):

    .. math::
        F = \frac{R(u)\, \delta_t^{-} u - D\, \delta_{xx} u}{R(u_b)},

    which vanishes where the PDE above holds.  Both choices are about the
    least-squares problem, not the PDE: with ``u_t - D u_xx / R(u)`` a region
    where u dips below 0 (R saturates at ~13) hides a frozen front almost for
    free, and central time differences decouple odd and even time rows.
    Levenberg-Marquardt over all grid values, started from u = 0, stalls far
    from the solution with the divided form and reaches the discretisation
    floor with both changes (``pihc.training.floor``; the measurements are in
    docs/design.md and docs/results.md).

    The spatial operator is PDEBench's cell-centred finite-volume Laplacian:
    the compact stencil closed by a ghost value beyond each end.  PDEBench's
    solver (1024 cells) holds its left ghost cell at ``boundary_value`` and
    its right ghost cell at ``D (u_{n-2} - u_{n-1}) / dx``, i.e. it imposes
    the boundary values half *its* cell outside (0, 1).  On another grid the
    ghost cell sits elsewhere, so the ghost value is the linear extrapolation
    through the edge cell's value and the boundary value at that location
    (:meth:`ghosts`).  On PDEBench's own grid this is its closure exactly; on a
    coarser grid it keeps the restricted data consistent: holding the ghost
    itself at 1 on a 256-cell grid moves the boundary by 1.5 fine cells and
    gives the converged solution a residual in the first cell that dominates
    its training loss.  The boundary *rows* say the same thing
    in row form: the quadratic extrapolation of u to the boundary location
    equals the boundary value.

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
        boundary_offset: distance outside (0, 1) at which the boundary values
            are held.  PDEBench's data: half a cell of its 1024-cell grid,
            ``0.5 / 1024`` (the default); 0 puts them on the faces x = 0, 1;
            ``None`` holds the ghost cells of whatever grid is used (PDEBench's
            closure applied to that grid).
        time_stencil: ``"backward"`` (BDF, causal: the residual rows are an
            implicit time-stepping scheme) or ``"central"`` (central
            differences, one-sided at the ends).
        time_accuracy: order of u_t: 1 or 2 for ``"backward"``, 2 or 4 for
            ``"central"``.
        residual_form: ``"multiplied"``, ``(R(u) u_t - D u_xx) / R(u_b)``, or
            ``"divided"``, ``u_t - D u_xx / R(u)`` (PDEBench's form).  Same zeros,
            same units (1 / time); they differ by the factor ``R(u) / R(u_b)``
            (1 at u = u_b, 1.2 at u = 0.1, 4.2 below 0).
    """

    diffusivity: float | Array = 5e-4
    porosity: float | Array = 0.29
    bulk_density: float | Array = 2880.0
    freundlich_k: float | Array = 3.5e-4
    freundlich_n: float | Array = 0.874
    boundary_value: float | Array = 1.0
    regularisation: float | Array = 1e-6
    smoothing: float | Array = 1e-3
    boundary_offset: float | None = eqx.field(static=True, default=0.5 / 1024)
    time_stencil: Literal["backward", "central"] = eqx.field(static=True, default="backward")
    time_accuracy: int = eqx.field(static=True, default=2)
    residual_form: Literal["multiplied", "divided"] = eqx.field(static=True, default="multiplied")

    def __check_init__(self):
        orders = {"backward": (1, 2), "central": (2, 4)}
        if self.time_stencil not in orders:
            raise ValueError(f"time_stencil must be 'backward' or 'central', got {self.time_stencil!r}")
        if self.time_accuracy not in orders[self.time_stencil]:
            raise ValueError(f"time_accuracy {self.time_accuracy} is not available for the"
                             f" {self.time_stencil} stencil; use one of {orders[self.time_stencil]}")
        if self.residual_form not in ("multiplied", "divided"):
            raise ValueError(f"residual_form must be 'multiplied' or 'divided', got {self.residual_form!r}")

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("u", "u_t", "u_xx")

    @property
    def curvature_pairs(self) -> tuple[tuple[str, str], ...]:
        # Either residual form is linear in u_t and u_xx and nonlinear in u through R(u) alone.
        second = "u_t" if self.residual_form == "multiplied" else "u_xx"
        return (("u", "u"), ("u", second))

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

    def _right_value(self, u, dx):
        # -D u_x at the right end: the value held beyond x = 1 (outflow).
        return self.diffusivity * (u[..., -2] - u[..., -1]) / dx

    def ghost_weight(self, dx: float) -> float:
        """a = dx / (dx/2 + offset): the ghost value is ``u_edge + a (v - u_edge)``.

        The ghost cell centre lies ``dx`` beyond the edge cell's centre, the
        boundary value ``v`` ``dx/2 + offset`` beyond it; a straight line
        through both gives ``a``.  ``a = 1`` (the ghost holds ``v``) when the
        offset is half a cell, as on PDEBench's grid.
        """
        if self.boundary_offset is None:
            return 1.0
        if self.boundary_offset < 0:
            raise ValueError(f"boundary_offset must be >= 0 or None, got {self.boundary_offset}")
        return dx / (0.5 * dx + self.boundary_offset)

    def ghosts(self, u: Float[Array | np.ndarray, "... nx"], dx: float):
        """Ghost values beyond the left and right cells, affine in ``u``.

        Written ``(1 - a) u_e + a v`` so that ``a = 1`` gives ``v`` exactly
        (PDEBench's closure, bit for bit).
        """
        a = self.ghost_weight(dx)
        left = (1.0 - a) * u[..., 0] + a * self.boundary_value
        right = (1.0 - a) * u[..., -1] + a * self._right_value(u, dx)
        return left, right

    def terms(self, u: Float[Array, "nt nx"], grid: Grid) -> Float[Array, "nt nx 3"]:
        dt, dx = grid.spacing("t"), grid.spacing("x")
        if self.time_stencil == "backward":
            u_t = diff1_backward(u, 0, dt, order=self.time_accuracy)
        else:
            u_t = diff1(u, 0, dt, order=self.time_accuracy)
        u_xx = diff2_ghost(u, 1, dx, *self.ghosts(u, dx))
        return jnp.stack([u, u_t, u_xx], axis=-1)

    def residual(self, terms: Float[Array, "*points 3"]) -> Float[Array, "*points"]:
        u, u_t, u_xx = terms[..., 0], terms[..., 1], terms[..., 2]
        if self.residual_form == "divided":
            return u_t - self.diffusivity / self.retardation(u) * u_xx
        R_b = self.retardation(jnp.asarray(self.boundary_value, u.dtype))
        return (self.retardation(u) * u_t - self.diffusivity * u_xx) / R_b

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
        # Quadratic extrapolation from the three edge cells to the boundary
        # location, s = (dx/2 + offset) / dx cells beyond the edge cell (s = 1,
        # the ghost cell, gives 3u_0 - 3u_1 + u_2): Lagrange weights at -s
        # for nodes 0, 1, 2.
        s = 1.0 / self.ghost_weight(dx)
        w = ((s + 1.0) * (s + 2.0) / 2.0, -s * (s + 2.0), s * (s + 1.0) / 2.0)
        left = w[0] * v[:, 0] + w[1] * v[:, 1] + w[2] * v[:, 2] - self.boundary_value
        right = w[0] * v[:, -1] + w[1] * v[:, -2] + w[2] * v[:, -3] - self._right_value(v, dx)
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
