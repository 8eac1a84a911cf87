r"""One expert's least-squares problem: its residual, normal equations, Hessian and adjoint factors.

Expert ``k`` of the constraint layer (:class:`~pihc.constraint.HardConstraint`)
minimises ``1/2 ||r(w)||^2`` over its weights ``w`` (N of them), with

.. math::
    r(w) = \begin{pmatrix} s\, F(\Phi_j w + c_j) \quad (j \in S_k) \\
                           S\, (R w + r_0) \\
                           \rho\, w \end{pmatrix},

where ``Phi_j`` (n_terms x N) and ``c_j`` are the PDE terms' linear and
constant parts at the expert's point ``j`` (:mod:`pihc.linearise`),
``F = pde.residual`` is pointwise, ``R`` and ``r_0`` are the initial and
boundary rows (affine in ``w``), ``s = sqrt(lambda_pde / m)`` and the
diagonal ``S`` weigh each block as a mean of squares over the rows the
expert has (``S`` is zero on rows it does not fit), and ``rho`` is the ridge.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .dense import solve_spd, solve_sym
from .least_squares import RESULTS
from .pdes.base import PDE

__all__ = ["ExpertProblem", "RowWeights"]


# The passes over Phi (ExpertProblem._over_points): a Phi of at most _ONE_BLOCK_BYTES is one block
# (for a small N or few points a loop over blocks only adds its overhead); a larger one goes in
# blocks of _BLOCK_BYTES (128 points of N = 64 and five terms), which stay in a core's L2 cache
# while everything formed from them is summed (the block sizes measured: docs/benchmarks.md).
_ONE_BLOCK_BYTES = 3 * 2**19
_BLOCK_BYTES = 5 * 2**16


class RowWeights(eqx.Module):
    """Weights of the blocks of an expert's problem.

    Each block is a mean of squares, so a weight does not depend on how many
    points or rows the block has.  The blocks' units differ (the PDE
    residual of diffusion-sorption is ~1e-3 where the initial rows are ~1),
    so balance them here rather than letting one dominate the fit.

    Attributes:
        pde: lambda_pde, the weight of the mean squared PDE residual.
        initial: lambda_ic, of the mean squared initial-condition rows.
        boundary: lambda_bc, of the mean squared boundary rows.
        ridge: rho, the ridge rows ``rho * w`` (the paper's 1e-4).
    """

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0
    ridge: float = 1e-4

    def __check_init__(self):
        for name in ("pde", "initial", "boundary", "ridge"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"row weight {name} must be a finite number >= 0, got {v!r}")


class RowsGram(NamedTuple):
    """The linear rows' and the ridge's Gauss-Newton matrix ``R_s^T R_s + rho^2 I`` and ``R_s^T r_s``.

    ``R_s = S R``, ``r_s = S r_0``.  They do not depend on ``w``: each solve
    forms them once instead of in every iteration.
    """

    A: Float[Array, "N N"]
    g: Float[Array, " N"]


class ExpertProblem(eqx.Module):
    """One expert's problem (module docstring); a leading expert axis under ``vmap``.

    Attributes:
        phi: ``Phi``, the terms' linear parts at the expert's points, ``(m, n_terms, N)``.
        c: the terms' constants there, ``(m, n_terms)``.
        rows: ``R``, the initial then boundary rows' linear parts, ``(n_rows, N)``.
        rows_offset: ``r_0``, their constants.
        row_scale: ``S``'s diagonal.
        pde: the PDE, whose ``residual`` is ``F``.
        pde_scale: ``s``.
        ridge: ``rho``.
        block: points per block of the passes over ``Phi`` (:meth:`normal_equations`,
            :meth:`hessian`): each block's products are formed while its ``Phi`` is in cache.
            None (default): a ``Phi`` of at most 1.5 MiB is one block, without a loop; a larger
            one goes in blocks of 320 KiB (128 points for N = 64 and five terms).
        sliced: ``phi`` is a block of a larger one (set by the passes over blocks), which
            :meth:`phi_times` reads in the layout of the Jacobian's product.
    """

    # Stacked (``HardConstraint``'s K experts) phi, c and row_scale carry the
    # leading expert axis; the rows are shared.
    phi: Float[Array, "*experts m n_terms N"]
    c: Float[Array, "*experts m n_terms"]
    rows: Float[Array, "n_rows N"]
    rows_offset: Float[Array, " n_rows"]
    row_scale: Float[Array, "*experts n_rows"]
    pde: PDE
    pde_scale: float = eqx.field(static=True)
    ridge: float = eqx.field(static=True)
    block: int | None = eqx.field(static=True, default=None)
    sliced: bool = eqx.field(static=True, default=False)

    def phi_times(self, x: Float[Array, " N"]) -> Float[Array, "m n_terms"]:
        """``Phi_j x`` at every point: the terms' linear part."""
        if self.sliced:
            # A block sliced out of the whole Phi (_over_points) is copied for each product that reads
            # it in a layout of its own: as one matrix-vector product (points * terms, N) the terms
            # took a second copy beside the (points, terms, N) one of J's batched product. Batched
            # over the points too, both read the same copy (the same sums, in the same order).
            return jnp.einsum("mtn,mn->mt", self.phi, jnp.broadcast_to(x, (self.phi.shape[0], x.shape[0])))
        return jnp.einsum("mtn,n->mt", self.phi, x)

    def terms(self, w: Float[Array, " N"]) -> Float[Array, "m n_terms"]:
        """The PDE terms at the points: ``Phi_j w + c_j``."""
        return self.phi_times(w) + self.c

    def row_residual(self, w: Float[Array, " N"]) -> Float[Array, " n_rows"]:
        """The weighted initial/boundary rows: ``S (R w + r_0)``."""
        return self.row_scale * (self.rows @ w + self.rows_offset)

    def residual(self, w: Float[Array, " N"]) -> Float[Array, " rows"]:
        """``r(w)`` as stacked rows (what the solver minimises; the reference for the rest)."""
        return jnp.concatenate([self.pde_scale * self.pde.residual(self.terms(w)), self.row_residual(w),
                                self.ridge * w])

    def optimality(self, w: Float[Array, " N"]) -> Float[Array, " N"]:
        """``grad_w 1/2 ||r(w)||^2`` by autodiff of :meth:`residual`; zero at the solution."""
        return jax.grad(lambda v: 0.5 * jnp.sum(self.residual(v) ** 2))(w)

    def rows_gram(self) -> RowsGram:
        R = self.row_scale[:, None] * self.rows
        r0 = self.row_scale * self.rows_offset
        n = self.rows.shape[1]
        return RowsGram(R.T @ R + self.ridge ** 2 * jnp.eye(n, dtype=R.dtype), R.T @ r0)

    def row_fit(self, gram: RowsGram) -> Float[Array, " N"]:
        """argmin_w of the linear rows and the ridge alone: the solver's start (``start="row_fit"``)."""
        # A = R^T R + ridge^2 I is symmetric positive definite: Cholesky (LU's pivoting is a loop of
        # small operations per solve on the CPU, and there are experts x samples of them).
        w = -solve_spd(gram.A, gram.g)
        # A non-finite start (NaN in the basis) is left to the solver, which
        # reports it; zeros are a valid fallback.
        return jnp.where(jnp.all(jnp.isfinite(w)), w, jnp.zeros_like(w))

    def pde_rows(self, w: Float[Array, " N"]) -> tuple[Float[Array, " m"], Float[Array, "m N"]]:
        """The weighted PDE rows and their Jacobian ``J = s sum_t diag(dF/dT_t) Phi_t``."""
        F, dF = self._residual_and_slopes(self.terms(w))
        # s scales dF, not J: XLA's CPU backend fuses a scaling of J into the
        # dot that forms J^T J and runs that dot about twice as slowly.
        return self.pde_scale * F, self._jacobian(self.pde_scale * dF)

    def _residual_and_slopes(self, T: Float[Array, "m n_terms"]
                             ) -> tuple[Float[Array, " m"], Float[Array, "m n_terms"]]:
        """``F`` and ``dF/dT`` at every point of the terms ``T`` (unscaled)."""
        return jax.vmap(jax.value_and_grad(self.pde.residual))(T)

    def _jacobian(self, dF: Float[Array, "m n_terms"]) -> Float[Array, "m N"]:
        """``sum_t diag(dF_t) Phi_t``: the rows' Jacobian in ``w`` for the slopes ``dF``."""
        return jnp.einsum("mt,mtn->mn", dF, self.phi)

    def normal_equations(self, w: Float[Array, " N"], gram: RowsGram
                         ) -> tuple[Float[Array, ""], Float[Array, " N"], Float[Array, "N N"]]:
        """``(1/2 ||r||^2, J^T r, J^T J)`` with the linear rows' ``J^T J`` from ``gram``.

        The PDE rows' sums run over blocks of points (:meth:`_over_points`).
        The linear rows' cost and gradient come from their residual
        ``S (R w + r_0)`` itself, not from the Gram form
        ``w.(R_s^T R_s) w + 2 (R_s^T r_s).w + r_s.r_s``: with large weights
        (an ill-conditioned basis) that form cancels, and its rounding error,
        about ``eps w.(R_s^T R_s) w``, can exceed the cost's decrease near
        the solution, so the solver rejects good steps and stalls short of
        its tolerance.  The residual costs ``2 n_rows N`` per iteration.
        """
        def part(p: "ExpertProblem"):
            r, J = p.pde_rows(w)
            return r @ r, J.T @ r, J.T @ J

        rr, Jr, JJ = self._over_points(part)
        rows = self.row_residual(w)
        ridge2 = self.ridge ** 2
        cost = 0.5 * (rr + rows @ rows + ridge2 * (w @ w))
        return cost, Jr + self.rows.T @ (self.row_scale * rows) + ridge2 * w, JJ + gram.A

    def hessian(self, w: Float[Array, " N"], gram: RowsGram) -> Float[Array, "N N"]:
        """The exact Hessian of ``1/2 ||r||^2``: ``s^2 (J_0^T J_0 + C) + R_s^T R_s + rho^2 I``.

        ``J_0 = sum_t diag(dF/dT_t) Phi_t`` is the PDE rows' Jacobian before
        the scale ``s``, and ``C`` the curvature (:meth:`curvature`).  Summed
        over blocks of points (:meth:`_over_points`).
        """
        return self.pde_scale ** 2 * self._over_points(lambda p: p._second_order(w, gauss_newton=True)) + gram.A

    def curvature(self, w: Float[Array, " N"]) -> Float[Array, "N N"]:
        r"""The Hessian's part that Gauss-Newton neglects: ``s^2 C`` with ``C = sum_j F_j Phi_j^T (grad^2 F_j) Phi_j``.

        ``grad^2 F_j`` (n_terms x n_terms) is the second derivative of the
        residual in the terms at point ``j``; the Levenberg-Marquardt solver's
        second-order model is ``J^T J + s^2 C`` (``curvature``).
        """
        return self.pde_scale ** 2 * self._over_points(lambda p: p._second_order(w, gauss_newton=False))

    def _second_order(self, w: Float[Array, " N"], gauss_newton: bool) -> Float[Array, "N N"]:
        r"""``C`` (and ``J_0^T J_0 + C`` with ``gauss_newton``) over this problem's points.

        With the PDE's ``curvature_pairs`` (each pair ``(a, b)`` taken once,
        grouped by a left term ``a``) this is ``Y + Y^T``,

        .. math::
            Y = \sum_a \Phi_a^T \sum_b c_{ab} \operatorname{diag}(F \partial_a \partial_b F) \Phi_b
                \;(+\, \tfrac12 J_0^T J_0), \quad c_{ab} = \tfrac12 \text{ if } a = b \text{ else } 1,

        one product of length (groups [+ 1]) x points: for Navier-Stokes 2 (3)
        against 5 for the whole per-point matrix (for a block sliced out of a
        larger ``Phi``, one product per part, summed).  Without the pairs, or
        where they save nothing, it is ``Phi^T (M Phi)`` with ``M_j`` the whole
        ``F_j grad^2 F_j`` (``+ dF_j dF_j^T``), as one (points * terms)-long
        product of 2-D arrays: as ``einsum("mtn,mtk->nk")`` XLA's CPU backend
        fused the making of ``M Phi`` into a dot with two contracting axes,
        several times slower.
        """
        T = self.terms(w)
        F, dF = self._residual_and_slopes(T)
        K = F[:, None, None] * jax.vmap(jax.hessian(self.pde.residual))(T)  # F grad^2 F, (m, n_terms, n_terms)
        m, n_terms, n = self.phi.shape
        groups = _curvature_groups(self.pde)
        if groups is None or len(groups) + gauss_newton >= n_terms:
            M = K + dF[:, :, None] * dF[:, None, :] if gauss_newton else K
            # n_terms broadcast products, not a dot batched over the points: XLA's CPU dot runs that
            # as m tiny (n_terms x n_terms) @ (n_terms x N) products, slower than one fused pass.
            P = sum(M[:, :, s, None] * self.phi[:, None, s, :] for s in range(n_terms))
            return self.phi.reshape(-1, n).T @ P.reshape(-1, n)
        left, right = [], []
        if gauss_newton:
            J = self._jacobian(dF)
            left, right = [J], [0.5 * J]
        for a, bs in groups:
            left.append(self.phi[:, a, :])
            right.append(sum(c * K[:, a, b, None] * self.phi[:, b, :] for b, c in bs))
        if self.sliced:
            # A block of a larger Phi: concatenated, its parts would be copied a second time.
            Y = sum(a.T @ b for a, b in zip(left, right))
        else:
            Y = jnp.concatenate(left).T @ jnp.concatenate(right)
        return Y + Y.T

    def _over_points(self, part):
        """``sum_b part(problem restricted to block b of the points)`` (any pytree of arrays).

        Each block's ``Phi`` is read once, for everything ``part`` forms from
        it, while it is in cache: over all points at once, XLA's CPU backend
        reads ``Phi`` from memory once per product (the terms ``Phi w``, then
        ``J``; or ``M Phi``, then ``Phi^T (M Phi)``) and writes the
        ``(points, N)`` and ``(points, n_terms, N)`` intermediates out.
        """
        m, n_terms, n = self.phi.shape
        if self.block is not None:
            size = self.block
        else:
            per_point = n_terms * n * self.phi.dtype.itemsize
            size = m if m * per_point <= _ONE_BLOCK_BYTES else _BLOCK_BYTES // per_point
        size = max(1, min(size, m))
        full, rest = divmod(m, size)

        def on(start, length):
            take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, length)  # noqa: E731
            block = eqx.tree_at(lambda p: (p.phi, p.c), self, (take(self.phi), take(self.c)))
            return part(dataclasses.replace(block, sliced=size < m))

        total = on(0, size)
        if full > 1:
            total = jax.lax.fori_loop(1, full, lambda i, acc: jax.tree.map(jnp.add, acc, on(i * size, size)),
                                      total)
        if rest:
            total = jax.tree.map(jnp.add, total, on(full * size, rest))
        return total

    def adjoint_factors(self, w: Float[Array, " N"], status: Int[Array, ""], ct_w: Float[Array, " N"],
                        gram: RowsGram):
        r"""The implicit adjoint as two rank-one cotangents of ``(Phi, c, R, r_0)``.

        With ``v = -H^{-1} ct_w`` the cotangent of every problem array is
        that of ``v . G`` (``G = grad_w 1/2 ||r||^2``; :mod:`pihc.adjoint`).
        ``G = s^2 Phi^T gamma + R^T S^2 (R w + r_0) + rho^2 w`` with
        ``gamma_j = grad_T F^2/2`` at ``Phi_j w + c_j`` reads ``Phi`` and the
        rows only through ``Phi_j w``, ``Phi_j^T (.)``, ``R w`` and ``R^T (.)``, so

        .. math::
            \bar\Phi_j = s^2 \gamma_j v^T + s^2 (\Gamma_j \Phi_j v) w^T, \quad
            \bar c_j = s^2 \Gamma_j \Phi_j v, \\
            \bar R = S^2 (R w + r_0) v^T + (S^2 R v) w^T, \quad \bar r_0 = S^2 R v,

        with ``Gamma_j`` the Jacobian of ``gamma_j`` in the terms.  Returned
        are the left factors on the points and rows, ``a_v`` (paired with
        ``v``) and ``a_w`` (paired with ``w``), and ``v``; the constants'
        cotangents are ``a_w``.  All zero for a failed solve.
        """
        ok = status == RESULTS.successful
        v = jnp.where(ok, -solve_sym(self.hessian(w, gram), ct_w), 0.0)
        grad_h = jax.vmap(jax.grad(lambda t: 0.5 * self.pde.residual(t) ** 2))
        gamma, Gamma_phi_v = jax.jvp(grad_h, (self.terms(w),), (self.phi_times(v),))
        s2 = self.pde_scale ** 2
        a_v = (s2 * gamma, self.row_scale * self.row_residual(w))
        a_w = (s2 * Gamma_phi_v, self.row_scale ** 2 * (self.rows @ v))
        # where, not a product: a failed solve's arrays may hold NaN (NaN * 0 = NaN).
        return jax.tree.map(lambda x: jnp.where(ok, x, 0.0), (a_v, a_w)) + (v,)

    def pde_cotangent(self, w: Float[Array, " N"], v: Float[Array, " N"]) -> PDE:
        r"""The cotangent of the PDE's array fields through ``F`` itself: ``d/dtheta (v . G)``.

        ``G``'s PDE part, ``s^2 Phi^T gamma(T; theta)``, depends on the
        constants ``theta`` also through ``F``; at fixed terms ``T_j`` its
        derivative paired with ``v`` is that of
        ``s^2 sum_j (Phi_j v) . grad_T F^2/2 (T_j; theta)``.  (Constants that
        enter the terms or rows are the row map's; see
        :class:`~pihc.constraint.ExpertsProblem`.)
        """
        T, phi_v = self.terms(w), self.phi_times(v)

        def pairing(pde):
            gamma = jax.vmap(jax.grad(lambda t: 0.5 * pde.residual(t) ** 2))(T)
            return self.pde_scale ** 2 * jnp.vdot(phi_v, gamma)

        return eqx.filter_grad(pairing)(self.pde)


def _curvature_groups(pde: PDE) -> tuple[tuple[int, tuple[tuple[int, float], ...]], ...] | None:
    """``pde.curvature_pairs`` as term indices: ``((a, ((b, c_ab), ...)), ...)`` (:meth:`ExpertProblem._second_order`).

    Each unordered pair once; a term that is in the most remaining pairs is
    taken as the next left term, so few groups cover them.  None: no pairs
    declared (every pair may be non-zero).
    """
    pairs = pde.curvature_pairs
    if pairs is None:
        return None
    names = tuple(pde.term_names)
    left = set()
    for pair in pairs:
        if len(pair) != 2 or any(x not in names for x in pair):
            raise ValueError(f"{type(pde).__name__}.curvature_pairs has {pair!r}; each pair names two of its"
                             f" terms {names}")
        left.add(tuple(sorted(names.index(x) for x in pair)))
    groups = []
    while left:
        a = max(range(len(names)), key=lambda t: sum(t in p for p in left))
        mine = sorted(p for p in left if a in p)
        left -= set(mine)
        groups.append((a, tuple((p[0] + p[1] - a, 0.5 if p[0] == p[1] else 1.0) for p in mine)))
    return tuple(groups)
