"""The PDE interface that the constraint layer, the experts and the trainer call.

A PDE is an :class:`equinox.Module` whose fields are its physical constants.
Fields may be arrays, so a batch of PDEs with per-sample constants is one
PDE with a leading axis on its fields (``jax.vmap`` over it).

The hard-constraint method needs the residual of ``u = b . w`` for many
weight vectors ``w`` and one basis ``b``.  It therefore splits the residual
into

* ``terms(u, grid)``: the differential terms the residual needs (``u``,
  ``u_t``, ``u_xx``, ...), stacked on a last axis.  They must be **affine** in
  ``u``: ``terms(u) = L u + c``.  Inhomogeneous boundary conditions folded
  into a stencil (ghost cells) make ``c`` non-zero.
* ``residual(terms)``: a pointwise, possibly nonlinear, function of those
  terms and of the constants (fields).

Because ``terms`` is affine, the terms of ``b . w`` are ``(L b) w + c``; the
constraint layer evaluates ``L b`` once per forward pass and reuses it in
every solver iteration.

Initial and boundary conditions are *rows*: affine functions of ``u`` that
vanish when the condition holds.  Each row is attached to a grid point so that
experts can take only the rows inside their block.  A PDE whose initial
condition is imposed by construction overrides :meth:`PDE.parametrise`
(``u = B w + offset`` with ``B, offset`` derived from the network's basis).
"""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ..grid import Grid


class PDE(eqx.Module):
    """Abstract PDE.  Subclass it; fields are the physical constants.

    A subclass defines :attr:`term_names`, :meth:`terms` and :meth:`residual`;
    the rest has defaults for a PDE on periodic space axes whose initial
    condition is ``u(t_0) = u0`` (docs/pdes.md states the whole contract;
    :func:`pihc.check_pde` tests an implementation numerically).
    """

    @property
    @abc.abstractmethod
    def term_names(self) -> tuple[str, ...]:
        """Names of the stacked terms returned by :meth:`terms`."""

    @abc.abstractmethod
    def terms(self, u: Float[Array, "*grid"], grid: Grid) -> Float[Array, "*grid n_terms"]:
        """The differential terms of ``u`` on ``grid``; affine in ``u``."""

    @abc.abstractmethod
    def residual(self, terms: Float[Array, "*points n_terms"]) -> Float[Array, "*points"]:
        """The pointwise PDE residual F(terms); zero where the PDE holds."""

    @property
    def curvature_pairs(self) -> tuple[tuple[str, str], ...] | None:
        """The pairs of terms ``(a, b)`` whose second derivative ``d^2 F / dT_a dT_b`` may be non-zero.

        ``a == b`` names a second derivative in one term.  Optional: the
        default, None, lets every pair be non-zero.  A PDE whose residual is
        linear in most terms (Navier-Stokes: ``L + u w_x + v w_y`` has only
        ``(w_x, u)`` and ``(w_y, v)``) declares its pairs, and the constraint
        layer forms the curvature ``sum_j F_j Phi_j^T (grad^2 F_j) Phi_j`` of
        its exact Hessian from those pairs alone.  :func:`pihc.check_pde`
        tests the declaration at random terms.
        """
        return None

    def residual_domain(self, grid: Grid) -> np.ndarray:
        """Boolean mask, shape ``grid.shape``: where the PDE residual applies.

        Default: every point after the first time (``t > t_0``).  At ``t_0``
        the initial condition holds instead, and a backward time difference
        has no earlier point there."""
        mask = np.ones(grid.shape, bool)
        mask[0] = False
        return mask

    def initial_rows(self, u: Float[Array, "*grid"], u0: Float[Array, "*space"], grid: Grid
                     ) -> Float[Array, " n_ic"]:
        """Initial-condition rows; affine in ``u``, zero when ``u(t=0) = u0``.

        Default: ``u[0] - u0``, one row per point of the first time slice."""
        return (u[0] - u0).reshape(-1)

    def initial_row_points(self, grid: Grid) -> np.ndarray:
        """Integer grid index of each initial row, shape ``(n_ic, grid.ndim)``.

        Default: the points of the first time slice, in the order of
        :meth:`initial_rows`' default."""
        space = np.indices(grid.shape[1:]).reshape(grid.ndim - 1, -1).T
        return np.concatenate([np.zeros((len(space), 1), int), space], axis=1)

    def boundary_rows(self, u: Float[Array, "*grid"], grid: Grid) -> Float[Array, " n_bc"]:
        """Boundary-condition rows; affine in ``u``.  Default: none (periodic space axes)."""
        import jax.numpy as jnp

        return jnp.zeros((0,), u.dtype)

    def boundary_row_points(self, grid: Grid) -> np.ndarray:
        """Integer grid index of each boundary row, shape ``(n_bc, grid.ndim)``.  Default: none."""
        return np.zeros((0, grid.ndim), int)

    def parametrise(self, basis: Float[Array, "*grid n_basis"], u0: Float[Array, "*space"],
                    grid: Grid) -> tuple[Float[Array, "*grid n_basis"], Float[Array, "*grid"]]:
        """Map the network's basis to ``(B, offset)`` with ``u = B w + offset``.

        The default is ``(basis, 0)``: the initial condition is imposed by rows.
        Override it to impose conditions by construction.
        """
        import jax.numpy as jnp

        return basis, jnp.zeros(basis.shape[:-1], basis.dtype)

    def check_grid(self, grid: Grid) -> None:
        """Raise :class:`~pihc.grid.GridError` if this PDE cannot live on ``grid``."""
