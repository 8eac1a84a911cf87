r"""The hard-constraint layer (PI-HC) and its mixture of experts (PI-HC-MoE).

Given a basis ``b`` of shape ``(*grid, N)`` from a network, the layer finds
weights so that ``u = B w + offset`` (``(B, offset) = pde.parametrise(b)``)
satisfies the PDE at sampled points.  The grid is cut into
``K = prod(splits)`` blocks (:func:`~pihc.partition.partition`); expert ``k``
solves its own problem

.. math::
    \min_{w_k}\; \frac{\lambda_{pde}}{m} \sum_{j \in S_k} F(\Phi_j w_k + c_j)^2
      + \frac{\lambda_{ic}}{n_{ic}} \lVert M^{ic}_k (A^{ic} w_k + a^{ic}) \rVert^2
      + \frac{\lambda_{bc}}{n_{bc}} \lVert M^{bc}_k (A^{bc} w_k + a^{bc}) \rVert^2
      + \rho^2 \lVert w_k \rVert^2,

where ``S_k`` are ``m`` points drawn without replacement from block ``k``'s
part of ``pde.residual_domain`` (widened by ``overlap`` grid points on each
side, so that neighbouring experts fit some of the same points), ``Phi_j`` (n_terms x N) are the PDE terms of
the basis at point ``j`` (computed once per forward pass, reused by every
solver iteration), ``F = pde.residual`` and the ``M`` masks select the
initial/boundary rows: all of them for every expert (``rows="global"``, the
paper's choice) or only those inside block ``k`` (``rows="local"``).  The
solution on block ``k`` is ``u = B w_k + offset``.  One expert is PI-HC.

The solver is :func:`~pihc.least_squares.least_squares` with a structured
Jacobian ``J = sum_k diag(dF/dT_k) Phi_k``; experts are ``vmap``-ed (they
share nothing, so they can be sharded over devices along the expert axis).
Its implicit backward pass is taken here (:func:`_fit`), in the structured
form the problem allows: two rank-one terms per expert, mapped back to the
grid through the transposed rows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .grid import Grid
from .least_squares import RESULTS, Solution, least_squares, require_x64
from .partition import blend_windows, check_splits, partition, unpartition
from .pdes.base import PDE

__all__ = ["ConstraintWeights", "HardConstraint", "ConstrainedSolution", "linearise"]


class ConstraintWeights(eqx.Module):
    """Weights of the blocks of the constraint problem.

    Each block is a mean of squares, so a weight is independent of how many
    points or rows the block has.  The blocks' units differ (the PDE residual
    of diffusion-sorption is ~1e-3 when the initial rows are ~1), so balance
    them here rather than letting one dominate the fit.

    Attributes:
        pde: lambda_pde, weight of the mean squared PDE residual.
        initial: lambda_ic, weight of the mean squared initial-condition rows.
        boundary: lambda_bc, weight of the mean squared boundary rows.
        ridge: rho, the ridge rows ``rho * w`` (the paper's 1e-4).
    """

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0
    ridge: float = 1e-4


class ConstrainedSolution(eqx.Module):
    """Output of :class:`HardConstraint`.

    Attributes:
        u: the constrained prediction on the grid.
        weights: each expert's weights, ``(K, N)``.
        solution: the solver's :class:`~pihc.least_squares.Solution`, one entry per expert.
        points: flat grid indices of each expert's sampled points, ``(K, m)``.
    """

    u: Float[Array, "*grid"]
    weights: Float[Array, "K N"]
    solution: Solution
    points: Int[Array, "K m"]


def _affine_parts(f, select, basis, offset, *args):
    """Linear part of an affine ``f(u, *args)`` on each basis column, and ``f(offset, *args)``.

    ``f(B w + o) = L(B_i) w + f(o)`` for ``f`` affine in ``u`` (a pytree of
    outputs is allowed), ``L`` its linear part; both then pass through
    ``select`` (see :func:`_columns`).  ``f`` must not close over traced
    values: pass them in ``args``.

    ``L`` is ``f``'s tangent map (a JVP), not ``f(B_i) - f(0)``: the
    difference adds ``f``'s constant terms to every column and subtracts them
    again, a full pass over the (points x terms x columns) output that costs
    more than the terms themselves, and it loses digits where the constant
    dominates a column's value (a ghost value's boundary term).
    """

    def linear(u, *args):
        return jax.jvp(lambda v: f(v, *args), (jnp.zeros_like(u),), (u,))[1]

    offset_parts = f(offset, *args)
    return _columns(linear, select, basis, *args), \
        offset_parts if select is None else select(offset_parts, *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _columns(f, select, basis, *args):
    """``select(f(column))`` for every column of ``basis`` (its trailing axis), stacked last.

    ``select(out, *args)`` (or None: the identity) must be linear and act
    on the leading axes of ``f``'s outputs alone, so that it applies to one
    column's outputs and to all columns' stacked ones alike: e.g. taking
    rows at some points.  Forward, it runs once on the stacked outputs:
    selecting rows of the (rows, ..., columns) array copies contiguous
    rows, while selecting inside the per-column ``vmap`` gave a gather
    batched over the columns, whose output layout XLA then copied (column
    axis moved last) once per layout its readers wanted, four copies of
    the selected terms per step.

    The custom VJP exists for speed.  ``f`` (a PDE's derivative terms or
    rows) is built from slices; transposed, each slice becomes a pad to the
    whole grid.  Batched over all columns at once, those pads are
    materialised at full size (grid x columns x batch, tens of MB) and summed
    by a many-input fusion that took a fifth of a training step.  Here the
    transpose runs one column at a time (``lax.map``), so each pad is one
    grid's worth and stays in cache.
    """
    out = jax.vmap(lambda u: f(u, *args), in_axes=-1, out_axes=-1)(basis)
    return out if select is None else select(out, *args)


def _columns_fwd(f, select, basis, *args):
    return _columns(f, select, basis, *args), (basis, args)


def _columns_bwd(f, select, res, ct):
    basis, args = res
    # Differentiate with respect to the arguments made of floating arrays
    # (the PDE's fields, u0); the others (indices, None) get no cotangent.
    inexact = [a is not None and all(eqx.is_inexact_array(x) for x in jax.tree.leaves(a)) for a in args]

    def one(xs):
        column, ct_column = xs

        def g(u, floats):
            it = iter(floats)
            full = [next(it) if d else a for a, d in zip(args, inexact)]
            # Selected per column, so that the transpose (a scatter into a
            # grid-sized array) is per column too.
            return f(u, *full) if select is None else select(f(u, *full), *full)

        _, vjp = jax.vjp(g, column, [a for a, d in zip(args, inexact) if d])
        return vjp(ct_column)

    last_to_first = lambda a: jnp.moveaxis(a, -1, 0)  # noqa: E731
    ct_cols, ct_floats = jax.lax.map(one, (last_to_first(basis), jax.tree.map(last_to_first, ct)))
    # f's dependence on args is summed over the columns (each column is one f call).
    it = iter(jax.tree.map(lambda c: jnp.sum(c, axis=0), ct_floats))
    return (jnp.moveaxis(ct_cols, 0, -1), *[next(it) if d else None for d in inexact])


_columns.defvjp(_columns_fwd, _columns_bwd)


def initial_by_construction(B: Float[Array, "*grid N"], offset: Float[Array, "*grid"],
                            u0: Float[Array, "*space"], grid: Grid):
    r"""Impose ``u(t_0) = u_0`` exactly: ``u = u_0 + s(t) (B w + offset)``.

    ``s(t) = (t - t_0) / (t_1 - t_0)`` on the first (time) axis vanishes at
    the initial time, so every weight vector satisfies the initial condition
    and the initial rows are identically zero.  This is how the authors'
    Navier-Stokes code imposes its initial condition; here it works for any
    PDE whose first axis is time.  Scaling by ``t / T`` keeps the basis
    values O(1) elsewhere.
    """
    t = grid.axes[0]
    s = jnp.asarray((t.coords - t.lo) / (t.hi - t.lo), B.dtype).reshape((-1,) + (1,) * (B.ndim - 2))
    return s[..., None] * B, jnp.broadcast_to(u0, offset.shape) + s * offset


def linearise(pde: PDE, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], grid: Grid,
              initial: Literal["rows", "construction"] = "rows",
              points: Int[Array, "K m"] | None = None):
    """Affine decomposition of the PDE terms and rows for ``u = B w + offset``.

    ``(B, offset)`` come from ``pde.parametrise``; with ``initial =
    "construction"`` they are then composed with
    :func:`initial_by_construction`.

    Returns a dict with ``B`` (*grid, N), ``offset`` (*grid), ``ic`` (n_ic, N),
    ``ic_offset`` (n_ic,), ``bc`` (n_bc, N), ``bc_offset`` (n_bc,) and the PDE
    terms: on the whole grid, ``terms`` (*grid, n_terms, N) and
    ``terms_offset`` (*grid, n_terms); or, given ``points`` (flat grid
    indices, any shape P), only there: ``phi`` (*P, n_terms, N) and ``c``
    (*P, n_terms).
    """
    B, offset = _parametrise(pde, basis, u0, grid, initial)
    return _linearise_parametrised(pde, B, offset, u0, grid, points)


def _parametrise(pde, basis, u0, grid, initial):
    B, offset = pde.parametrise(basis, u0, grid)
    if initial == "construction":
        B, offset = initial_by_construction(B, offset, u0, grid)
    return B, offset


def _row_maps(pde: PDE, grid: Grid):
    """``(dynamic, parts, at_points)``: the PDE's array fields and its rows as functions of ``u``.

    ``parts(u, dynamic, u0, points)`` gives the terms on the grid and the
    initial and boundary rows; ``at_points`` (a linear select, see
    :func:`_columns`) takes the terms at the points.  The PDE's array
    fields (if any), u0 and the points are passed, not closed over.
    """
    dynamic, static = eqx.partition(pde, eqx.is_inexact_array)

    def parts(u, dynamic, u0, points):
        p = eqx.combine(dynamic, static)
        return p.terms(u, grid), p.initial_rows(u, u0, grid), p.boundary_rows(u, grid)

    def at_points(out, dynamic, u0, points):
        # The terms' rows (grid points) at the points: (*P, n_terms, *columns).
        terms, ic, bc = out
        return terms.reshape((grid.size,) + terms.shape[grid.ndim:])[points], ic, bc

    return dynamic, parts, at_points


def _linearise_parametrised(pde, B, offset, u0, grid, points):
    # One pass over the columns for all three parts (see _columns).
    dynamic, parts, at_points = _row_maps(pde, grid)
    (terms, ic, bc), (terms_offset, ic_offset, bc_offset) = _affine_parts(
        parts, None if points is None else at_points, B, offset, dynamic, u0, points)
    names = ("terms", "terms_offset") if points is None else ("phi", "c")
    return {"B": B, "offset": offset, names[0]: terms, names[1]: terms_offset,
            "ic": ic, "ic_offset": ic_offset, "bc": bc, "bc_offset": bc_offset}


def _row_masks(points: np.ndarray, grid_shape, splits) -> np.ndarray:
    """(K, n_rows) bool: which expert's block holds each row's grid point."""
    block = np.array([n // s for n, s in zip(grid_shape, splits)])
    if points.size == 0:
        return np.zeros((math.prod(splits), 0), bool)
    coords = points // block  # block coordinates of each row
    expert = np.ravel_multi_index(tuple(coords.T), tuple(splits))
    return expert[None, :] == np.arange(math.prod(splits))[:, None]


def _largest(scores: Float[Array, " n"], valid: Bool[Array, " n"], items: Int[Array, " n"], m: int
             ) -> Int[Array, " m"]:
    """``items`` at the ``m`` largest valid ``scores`` (in ``[0, 1)``), in their order in ``items``.

    The same selection as ``lax.top_k(where(valid, scores, -1), m)``, ties
    included (the lower index wins), found without sorting: non-negative
    float32 values order as their int32 bit patterns, so a 30-step
    bisection over the integers below ``bits(1.0)`` finds the ``m``-th
    largest key ``t``; every key above ``t`` is taken, and of the keys equal
    to ``t`` the first ones.  For PI-HC-MoE's 24 rows of 3,300 scores this
    is 2-3x cheaper than XLA's CPU ``top_k`` (a partial sort per row;
    ``benchmarks/step_profile.py``).
    """
    keys = jnp.where(valid, jax.lax.bitcast_convert_type(scores, jnp.int32), -1)

    def halve(_, bounds):  # invariant: count(keys >= lo) >= m > count(keys >= hi + 1)
        lo, hi = bounds
        mid = lo + (hi - lo + 1) // 2
        ok = jnp.sum(keys >= mid) >= m
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    one = np.int32(np.float32(1.0).view(np.int32))  # 2^30 > one: 30 halvings pin t
    t, _ = jax.lax.fori_loop(0, 30, halve, (jnp.int32(0), jnp.int32(one)))
    above = keys > t
    at = keys == t
    take = above | (at & (jnp.cumsum(at) <= m - jnp.sum(above)))
    slot = jnp.where(take, jnp.cumsum(take) - 1, m)  # m: dropped
    return jnp.zeros(m, items.dtype).at[slot].set(items, mode="drop")


# vmap axes of the experts' problem arrays (HardConstraint._args): the points'
# terms and the row masks are per expert, the initial/boundary rows shared.
_ARG_AXES = dict(phi=0, c=0, ic=None, ic_offset=None, ic_mask=0, bc=None, bc_offset=None, bc_mask=0)


class HardConstraint(eqx.Module):
    """PI-HC (one expert) and PI-HC-MoE (``prod(splits)`` experts).

    Args:
        pde: the :class:`~pihc.pdes.PDE`, with its physical constants.
        grid: the space-time grid of the basis.
        splits: experts per grid axis, e.g. ``(1, 4)`` for t1 x4; all ones is
            PI-HC.
        n_points: residual points sampled per expert (without replacement).
        rows: ``"global"``: every expert fits all initial/boundary rows (the
            paper); ``"local"``: only the rows inside its block.
        weights: :class:`ConstraintWeights`.
        max_steps, rtol, atol: Levenberg-Marquardt settings.
        damping: the solver's initial Marquardt parameter (relative to
            ``diag(J^T J)``; see :func:`~pihc.least_squares.least_squares`).
            The solver starts from the initial/boundary rows' solution, a
            good start, and the problems are close to linear, so the first
            steps are taken nearly undamped (Gauss-Newton); a step that fails
            raises the damping.  Nielsen's update lowers it by at most 3x
            per accepted step, so the textbook start of 1e-3 holds the first
            steps back: on trained PI-HC-MoE bases 4.3-5.9 iterations per
            solve (7 for the slowest expert) against 1 at 1e-10, to the
            same solution within ``rtol`` (``docs/benchmarks.md``).
        init: the solver's starting weights: ``"rows"`` (default) fits the
            linear rows alone (initial/boundary rows and ridge; a closed-form
            N x N solve), which starts the PDE solve from a ``u`` that
            already matches the data; ``"zeros"`` starts from ``w = 0``.
            Starting at ``u = 0`` is a poor choice for PDEs that are stiff
            there (diffusion-sorption's R(u) ~ u^(n_f - 1)).
        overlap: per grid axis, how many grid points beyond its block an
            expert also samples residual points from (default none: the
            paper's disjoint blocks).  The prediction on block k is still
            ``B w_k``; the overlap only makes neighbouring experts fit some
            of the same points, which ties their solutions together at the
            seams.
        blend: predict with a smooth partition of unity over the experts
            (:func:`~pihc.partition.blend_windows`) instead of each expert on
            its own block: ``u = sum_k chi_k B w_k + offset``, ``chi_k``
            falling from 1 to 0 across ``overlap`` points on each side of a
            seam, where both neighbours fit their PDE rows.  ``u`` is then as
            smooth across seams as the basis, even where the experts'
            weights differ (the paper's experts leave jumps there).  Needs
            ``overlap`` (at most half a block on the split axes).
        initial: how the initial condition enters: ``"rows"`` (the paper's
            diffusion-sorption setting: initial rows in every expert's
            problem, weighed by ``weights.initial``) or ``"construction"``
            (``u = u0 + (t - t0)/(T - t0) (B w + offset)``, exact for every
            ``w``; see :func:`initial_by_construction`).  With rows, the
            solver trades the initial rows against the PDE rows, whose units
            differ; by construction there is nothing to trade.

    Raises:
        GridError: ``splits`` does not divide the grid.
        ValueError: more points asked for than a block's domain holds.
    """

    pde: PDE
    grid: Grid = eqx.field(static=True)
    splits: tuple[int, ...] = eqx.field(static=True)
    n_points: int = eqx.field(static=True)
    rows: Literal["global", "local"] = eqx.field(static=True, default="global")
    weights: ConstraintWeights = eqx.field(static=True, default=ConstraintWeights())
    max_steps: int = eqx.field(static=True, default=100)
    rtol: float = eqx.field(static=True, default=1e-8)
    atol: float = eqx.field(static=True, default=1e-12)
    init: Literal["rows", "zeros"] = eqx.field(static=True, default="rows")
    initial: Literal["rows", "construction"] = eqx.field(static=True, default="rows")
    overlap: tuple[int, ...] | None = eqx.field(static=True, default=None)
    blend: bool = eqx.field(static=True, default=False)
    damping: float = eqx.field(static=True, default=1e-10)

    def __check_init__(self):
        if not (self.damping > 0 and math.isfinite(self.damping)):
            raise ValueError(f"damping must be a positive number, got {self.damping}")
        if self.initial not in ("rows", "construction"):
            raise ValueError(f"initial must be 'rows' or 'construction', got {self.initial!r}")
        if self.init not in ("rows", "zeros"):
            raise ValueError(f"init must be 'rows' or 'zeros', got {self.init!r}")
        if self.rows not in ("global", "local"):
            raise ValueError(f"rows must be 'global' or 'local', got {self.rows!r}")
        self.pde.check_grid(self.grid)
        check_splits(self.grid.shape, self.splits, self.grid.names)
        if self.overlap is not None and (len(self.overlap) != self.grid.ndim
                                         or any(int(h) != h or h < 0 for h in self.overlap)):
            raise ValueError(f"overlap {self.overlap} needs one non-negative integer per grid axis"
                             f" {self.grid.names}")
        if self.blend:
            if self.overlap is None:
                raise ValueError("blend needs an overlap: the points on each side of a seam over which"
                                 " neighbouring experts are blended, e.g. overlap=(0, 8)")
            self.windows()  # raises GridError for a halo wider than half a block
        counts = self.sampling_domains().sum(axis=1)
        if self.n_points < 1:
            raise ValueError(f"n_points must be >= 1, got {self.n_points}")
        if self.n_points > counts.min():
            raise ValueError(
                f"{self.n_points} points per expert requested, but expert {int(counts.argmin())}'s"
                f" sampling region holds only {int(counts.min())} points of the residual domain"
                f" (grid {self.grid.shape}, splits {self.splits}); ask for at most {int(counts.min())}")

    @property
    def n_experts(self) -> int:
        return math.prod(self.splits)

    def tied(self) -> "HardConstraint":
        """The experts' problems with one weight vector shared by all: one expert over the
        whole grid with ``n_points * n_experts`` points, the same rows and weights.

        With every expert's ``w_k`` set equal, the sum of their objectives is
        a single least-squares problem over the union of their points; this
        is that problem (its points drawn uniformly over the grid, not
        ``n_points`` per block).  PI-HC-MoE's training uses it for
        ``constraint.global_steps``.
        """
        return dataclasses.replace(self, splits=(1,) * self.grid.ndim, overlap=None, blend=False,
                                   n_points=self.n_points * self.n_experts)

    def windows(self) -> np.ndarray:
        """(K, *grid): each expert's share of the blended prediction, summing to 1 (see ``blend``)."""
        return blend_windows(self.grid.shape, self.splits, self.overlap)

    def sampling_domains(self) -> np.ndarray:
        """(K, G) bool over the flattened grid: where expert k samples its points.

        Block k (row-major block coordinates, as :func:`~pihc.partition.partition`
        numbers them), widened by ``overlap`` points per axis and clipped to
        the grid, intersected with ``pde.residual_domain``.
        """
        shape = self.grid.shape
        mask = np.asarray(self.pde.residual_domain(self.grid), bool)
        block = [n // s for n, s in zip(shape, self.splits)]
        halo = self.overlap or (0,) * self.grid.ndim
        out = np.zeros((self.n_experts, self.grid.size), bool)
        for k, coords in enumerate(np.ndindex(*self.splits)):
            region = np.zeros(shape, bool)
            region[tuple(slice(max(c * b - h, 0), min((c + 1) * b + h, n))
                         for c, b, h, n in zip(coords, block, halo, shape))] = True
            out[k] = (region & mask).ravel()
        return out

    def sample(self, key: PRNGKeyArray) -> Int[Array, "K m"]:
        """``n_points`` distinct flat grid indices per expert, uniform over its domain, ascending.

        The points are those of the ``n_points`` largest of i.i.d. uniform
        scores, one per domain point: a uniform sample without replacement.
        Scores are drawn per domain point (not per grid point) and in
        float32.  The selection is :func:`_largest`'s threshold search, not
        ``lax.top_k``: the same points (ties broken towards the lower index,
        as ``top_k`` does), 2-3x cheaper, returned in grid order rather than
        score order (``benchmarks/step_profile.py``).
        """
        candidates, valid = self._candidates()
        scores = jax.random.uniform(key, candidates.shape, jnp.float32)
        return jax.vmap(functools.partial(_largest, m=self.n_points))(scores, jnp.asarray(valid),
                                                                       jnp.asarray(candidates))

    def _candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, n_max) flat indices of each expert's domain points, padded; and the (K, n_max) mask."""
        dom = self.sampling_domains()
        counts = dom.sum(axis=1)
        cand = np.zeros((self.n_experts, int(counts.max())), np.int32)
        valid = np.zeros(cand.shape, bool)
        for k, d in enumerate(dom):
            cand[k, :counts[k]] = np.flatnonzero(d)
            valid[k, :counts[k]] = True
        return cand, valid

    def problems(self, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], key: PRNGKeyArray):
        """The experts' least-squares problems: ``(args, in_axes, lin, points)``.

        ``args`` holds each expert's arrays (leading axis K where ``in_axes``
        is 0, shared where it is None); :meth:`residual` and
        :meth:`residual_and_jac` evaluate one expert's problem.
        """
        basis, u0, idx = self._inputs(basis, u0, key)
        with jax.named_scope("linearise"):
            lin = linearise(self.pde, basis.astype(jnp.float64), u0, self.grid, self.initial, points=idx)
        return self._args(lin), _ARG_AXES, lin, idx

    def _inputs(self, basis, u0, key):
        """Checked inputs: the basis (its dtype kept), u0 in float64, and the sampled points."""
        require_x64()
        self.grid.check(basis, channels=1, what="basis")
        with jax.named_scope("sample"):
            idx = self.sample(key)
        return basis, jnp.asarray(u0, jnp.float64), idx

    def _args(self, lin) -> dict:
        """One expert's problem arrays (leading axis K where :data:`_ARG_AXES` says 0)."""
        ic_mask, bc_mask = self._masks()
        return dict(phi=lin["phi"], c=lin["c"], ic=lin["ic"], ic_offset=lin["ic_offset"], ic_mask=ic_mask,
                    bc=lin["bc"], bc_offset=lin["bc_offset"], bc_mask=bc_mask)

    def initial_weights(self, args, in_axes) -> Float[Array, "K N"]:
        """The solver's starting weights (see ``init``)."""
        if self.init == "rows":
            return jax.vmap(self._rows_solution, in_axes=(in_axes,))(args)
        return jnp.zeros((self.n_experts, args["ic"].shape[1]), jnp.float64)

    def __call__(self, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"],
                 key: PRNGKeyArray, w0: Float[Array, "K N"] | None = None) -> ConstrainedSolution:
        # Named scopes label the parts in profiles (jax.profiler, XLA dumps).
        with jax.named_scope("pihc.constraint.problems"):
            basis, u0, idx = self._inputs(_materialised_cotangent(basis), u0, key)
            B, offset = _parametrise(self.pde, basis.astype(jnp.float64), u0, self.grid, self.initial)
        dynamic, static = eqx.partition(self, eqx.is_inexact_array)
        sol = _fit(static, dynamic, B, offset, u0, idx,
                   None if w0 is None else jax.lax.stop_gradient(w0))
        with jax.named_scope("pihc.constraint.assemble"):
            if self.blend:
                each = jnp.einsum("...n,kn->k...", B, sol.value)  # every expert on the whole grid
                u = jnp.einsum("k...,k...->...", jnp.asarray(self.windows(), each.dtype), each) + offset
            else:
                blocks = partition(B, self.splits)  # (K, *block, N)
                u = unpartition(jnp.einsum("k...n,kn->k...", blocks, sol.value), self.splits) + offset
        return ConstrainedSolution(u=_materialised_cotangent(u), weights=sol.value, solution=sol, points=idx)

    def _adjoint(self, w, status, ct_w, a):
        """One expert's implicit adjoint, as cotangents of its rows' linear images.

        With ``v = -H^{-1} ct_w`` (``H``: :meth:`hessian`) the implicit
        function theorem gives the cotangent of every problem array as that
        of ``v . G`` (``G = grad_w 1/2 ||r||^2``, see
        :mod:`~pihc.least_squares`).  ``G`` reads ``Phi`` and the rows only
        through ``Phi_j w`` and ``Phi_j^T (.)``, so

            ct Phi_j = gamma_j v^T + (Gamma_j Phi_j v) w^T,   ct c_j = Gamma_j Phi_j v,
            ct R = S^2 (R w + r0) v^T + (S^2 R v) w^T,       ct r0 = S^2 R v

        for the PDE rows (``gamma = s^2 grad_T F^2/2``, ``Gamma`` its
        Jacobian) and the initial/boundary rows ``R`` (weights ``S``): two
        rank-one terms per expert.  Returned are their left factors (on the
        points and rows: ``a_v`` for ``v``, ``a_w`` for ``w``) and ``v``;
        zero for a failed solve (no gradient, as in least_squares).
        """
        a = dict(a, **self._rows_gram(a))
        ok = status == RESULTS.successful
        v = jnp.where(ok, -jnp.linalg.solve(self.hessian(w, a), ct_w), 0.0)
        s_pde, s_ic, s_bc = self._scales(a)
        grad_h = jax.vmap(jax.grad(lambda t: 0.5 * self.pde.residual(t) ** 2))
        gamma, Gamma_pv = jax.jvp(grad_h, (jnp.einsum("mtn,n->mt", a["phi"], w) + a["c"],),
                                  (jnp.einsum("mtn,n->mt", a["phi"], v),))
        a_v = (s_pde ** 2 * gamma, s_ic ** 2 * (a["ic"] @ w + a["ic_offset"]),
               s_bc ** 2 * (a["bc"] @ w + a["bc_offset"]))
        a_w = (s_pde ** 2 * Gamma_pv, s_ic ** 2 * (a["ic"] @ v), s_bc ** 2 * (a["bc"] @ v))
        # where, not a product: a failed solve's arrays may hold NaN (NaN * 0 = NaN).
        return jax.tree.map(lambda x: jnp.where(ok, x, 0.0), (a_v, a_w)) + (v,)

    def _masks(self):
        if self.rows == "global":
            ic = np.ones((self.n_experts, self.pde.initial_row_points(self.grid).shape[0]))
            bc = np.ones((self.n_experts, self.pde.boundary_row_points(self.grid).shape[0]))
        else:
            ic = _row_masks(self.pde.initial_row_points(self.grid), self.grid.shape, self.splits)
            bc = _row_masks(self.pde.boundary_row_points(self.grid), self.grid.shape, self.splits)
        return jnp.asarray(ic, jnp.float64), jnp.asarray(bc, jnp.float64)

    def _scales(self, a):
        wt = self.weights
        # Each block is a mean of squares over the rows the expert has.
        s_pde = math.sqrt(wt.pde / self.n_points)
        s_ic = jnp.sqrt(wt.initial / jnp.maximum(a["ic_mask"].sum(), 1.0)) * a["ic_mask"]
        s_bc = jnp.sqrt(wt.boundary / jnp.maximum(a["bc_mask"].sum(), 1.0)) * a["bc_mask"]
        return s_pde, s_ic, s_bc

    def residual(self, w: Float[Array, " N"], a: dict) -> Float[Array, " rows"]:
        """The stacked, weighted residual of one expert (what LM minimises)."""
        s_pde, s_ic, s_bc = self._scales(a)
        T = jnp.einsum("mtn,n->mt", a["phi"], w) + a["c"]
        return jnp.concatenate([
            s_pde * self.pde.residual(T),
            s_ic * (a["ic"] @ w + a["ic_offset"]),
            s_bc * (a["bc"] @ w + a["bc_offset"]),
            self.weights.ridge * w,
        ])

    def _pde_rows(self, w: Float[Array, " N"], a: dict):
        """The weighted PDE rows and their Jacobian ``J = sum_t diag(dF/dT_t) Phi_t`` (structured)."""
        s_pde = self._scales(a)[0]
        T = jnp.einsum("mtn,n->mt", a["phi"], w) + a["c"]
        F, dF = jax.vmap(jax.value_and_grad(self.pde.residual))(T)  # (m,), (m, n_terms)
        return s_pde * F, s_pde * jnp.einsum("mt,mtn->mn", dF, a["phi"])

    def residual_and_jac(self, w: Float[Array, " N"], a: dict):
        """Residual and its Jacobian, the PDE block's structured (:meth:`_pde_rows`)."""
        _, s_ic, s_bc = self._scales(a)
        r_pde, J_pde = self._pde_rows(w, a)
        r = jnp.concatenate([r_pde, s_ic * (a["ic"] @ w + a["ic_offset"]),
                             s_bc * (a["bc"] @ w + a["bc_offset"]), self.weights.ridge * w])
        J = jnp.concatenate([J_pde, s_ic[:, None] * a["ic"], s_bc[:, None] * a["bc"],
                             self.weights.ridge * jnp.eye(w.shape[0], dtype=w.dtype)])
        return r, J

    def _rows_gram(self, a) -> dict:
        """Normal equations of the linear rows (initial, boundary, ridge): ``R^T R``, ``R^T r_0``, ``r_0 . r_0``.

        They do not depend on ``w``, so each solve forms them once rather
        than in every iteration.
        """
        _, s_ic, s_bc = self._scales(a)
        R = jnp.concatenate([s_ic[:, None] * a["ic"], s_bc[:, None] * a["bc"]])
        r0 = jnp.concatenate([s_ic * a["ic_offset"], s_bc * a["bc_offset"]])
        n = a["ic"].shape[1]
        return dict(rows_A=R.T @ R + self.weights.ridge ** 2 * jnp.eye(n, dtype=R.dtype),
                    rows_g=R.T @ r0, rows_c=r0 @ r0)

    def normal_equations(self, w: Float[Array, " N"], a: dict):
        """``(1/2 ||r||^2, J^T r, J^T J)`` of :meth:`residual`, the rows' part precomputed.

        ``a`` holds :meth:`_rows_gram`'s arrays besides the problem's.
        """
        r, J = self._pde_rows(w, a)
        Aw = a["rows_A"] @ w
        cost = 0.5 * (r @ r + w @ Aw + 2.0 * a["rows_g"] @ w + a["rows_c"])
        return cost, J.T @ r + Aw + a["rows_g"], J.T @ J + a["rows_A"]

    def hessian(self, w: Float[Array, " N"], a: dict) -> Float[Array, "N N"]:
        """Exact Hessian of ``1/2 ||r||^2`` (:meth:`residual`) in ``w``, for the implicit backward.

        The PDE rows ``s F(Phi_j w + c_j)`` contribute ``s^2 Phi_j^T M_j
        Phi_j`` with ``M_j`` the (n_terms x n_terms) Hessian of ``F^2 / 2`` in
        the terms (Gauss-Newton part and curvature part together); the
        linear rows and the ridge contribute their Gram matrix.  Formed so,
        the per-point second derivatives are evaluated once; the generic
        route (``jacfwd`` of the gradient, N tangents) multiplies ``Phi`` by
        the identity and re-evaluates them for every tangent, which cost
        more than the rest of the backward solve.
        """
        P = self._curvature_product(w, a)
        # Phi^T P as one (points * terms)-long contraction of 2-D arrays.  Written
        # as einsum("mtn,mtk->nk"), XLA's CPU backend fused the making of P
        # into a dot with two contracting axes and ran it 2.5-3x slower than
        # P and this plain dot together (benchmarks/step_profile.py).
        n = P.shape[-1]
        return self._scales(a)[0] ** 2 * (a["phi"].reshape(-1, n).T @ P.reshape(-1, n)) + a["rows_A"]

    def _curvature_product(self, w: Float[Array, " N"], a: dict) -> Float[Array, "m n_terms N"]:
        """``M_j Phi_j`` at every point, ``M_j`` the Hessian of ``F^2 / 2`` in the terms at ``Phi_j w + c_j``."""
        T = jnp.einsum("mtn,n->mt", a["phi"], w) + a["c"]
        M = jax.vmap(jax.hessian(lambda t: 0.5 * self.pde.residual(t) ** 2))(T)  # (m, n_terms, n_terms)
        # M_j Phi_j as n_terms broadcast products, not a dot batched over the
        # points: XLA's CPU dot runs that as m tiny (n_terms x n_terms) @
        # (n_terms x N) products, 20% slower than this one fused pass over Phi.
        return sum(M[..., :, s, None] * a["phi"][..., s, None, :] for s in range(M.shape[-1]))

    def _rows_solution(self, a) -> Float[Array, " N"]:
        """argmin_w of the row blocks and the ridge alone (normal equations)."""
        gram = self._rows_gram(a)
        w = -jnp.linalg.solve(gram["rows_A"], gram["rows_g"])
        # A non-finite start (NaN in the basis) is left to the solver, which
        # reports it; zeros would hide nothing but are a valid fallback.
        return jnp.where(jnp.all(jnp.isfinite(w)), w, jnp.zeros_like(w))

    def _solve_expert(self, w0, a) -> Solution:
        # The rows' Gram matrix enters the arguments so that the solver's
        # iterations reuse it.  Only the forward solve is used: the backward
        # pass is _fit's structured adjoint (with self.hessian), so
        # least_squares' own implicit backward never runs here.
        return least_squares(self.residual, w0, dict(a, **self._rows_gram(a)), max_steps=self.max_steps,
                             rtol=self.rtol, atol=self.atol, normal_equations=self.normal_equations,
                             damping=self.damping)


@jax.custom_vjp
def _materialised_cotangent(x):
    """The identity, whose cotangent is computed once and stored (an optimisation barrier).

    The cotangent of ``u`` is read once per basis column (by the transpose
    of ``u = B w``), and that of the basis by several readers (the
    backbone's projection wants it in more than one layout).  XLA fused
    their producers into each reader, so the loss's whole backward pass
    (a chain of some 25 stencil transposes) was re-evaluated for every
    basis column in each of three fusions: 12 ms of a PI-HC-MoE step.
    """
    return x


def _materialised_fwd(x):
    return x, None


def _materialised_bwd(_, ct):
    return (jax.lax.optimization_barrier(ct),)


_materialised_cotangent.defvjp(_materialised_fwd, _materialised_bwd)


def _fit(static, dynamic, B, offset, u0, idx, w0):
    """The experts' weights for ``u = B w + offset``: :class:`Solution` with a structured adjoint.

    The backward pass is the implicit one of :func:`~pihc.least_squares.least_squares`
    (same values to roundoff), taken through the linear map from a grid
    field ``u`` to the rows (PDE terms at an expert's points, initial and
    boundary rows) rather than through ``Phi`` column by column: the
    cotangent of ``Phi`` and the rows has rank two per expert
    (:meth:`HardConstraint._adjoint`), so the transposed map runs on 2 K
    fields instead of N basis columns, and the (points x terms x N)
    cotangent of ``Phi`` is never formed.  With N = 16: 8 transposes
    instead of 16 for 4 experts, 2 for PI-HC.
    """

    @jax.custom_vjp
    def fit(dynamic, B, offset, u0, idx, w0):
        return fit_fwd(dynamic, B, offset, u0, idx, w0)[0]

    def fit_fwd(dynamic, B, offset, u0, idx, w0):
        self = eqx.combine(dynamic, static)
        with jax.named_scope("pihc.constraint.problems"), jax.named_scope("linearise"):
            args = self._args(_linearise_parametrised(self.pde, B, offset, u0, self.grid, idx))
        with jax.named_scope("pihc.constraint.solve"):
            if w0 is None:
                w0 = self.initial_weights(args, _ARG_AXES)
            sol = jax.vmap(self._solve_expert, in_axes=(0, _ARG_AXES))(w0, args)
        return sol, (sol.value, sol.status, args, dynamic, B, offset, u0, idx)

    def fit_bwd(res, ct):
        w, status, args, dynamic, B, offset, u0, idx = res
        self = eqx.combine(dynamic, static)
        with jax.named_scope("pihc.constraint.solve"):
            a_v, a_w, v = jax.vmap(self._adjoint, in_axes=(0, 0, 0, _ARG_AXES))(w, status, ct.value, args)
        with jax.named_scope("pihc.constraint.problems"):
            pde_dynamic, parts, at_points = _row_maps(self.pde, self.grid)
            # Left factors of both rank-one terms of every expert, r = 2K of them,
            # with their expert's points and their right factors (v_k, then w_k).
            cts = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a_v, a_w)
            pts = jnp.concatenate([idx, idx])
            ok = (status == RESULTS.successful)[:, None]
            vecs = jnp.concatenate([v, jnp.where(ok, w, 0.0)])  # a failed solve's w may be NaN

            def lin(u, d, p):  # u -> the rows' linear parts at points p
                return at_points(jax.jvp(lambda x: parts(x, d, u0, p), (jnp.zeros_like(u),), (u,))[1],
                                 d, u0, p)

            def transposed(xs):  # one field at a time, as in _columns
                ct_r, p = xs
                return jax.vjp(lambda u: lin(u, pde_dynamic, p), jnp.zeros_like(offset))[1](ct_r)[0]

            fields = jax.lax.map(transposed, (cts, pts))  # (2K, *grid)
            K = idx.shape[0]
            ct_B = jnp.einsum("r...,rn->...n", fields, vecs)
            ct_offset = jnp.sum(fields[K:], axis=0)  # offset enters c and the row offsets: a_w's parts

            # The PDE's array fields and u0 enter through the maps' coefficients and
            # constants: the derivative of sum_r <cts_r, rows of (B vecs_r [+ offset])>.
            def pairing(d, u0_):
                us = jnp.einsum("...n,rn->r...", B, vecs)
                lin_r = jax.vmap(lambda u, p: at_points(
                    jax.jvp(lambda x: parts(x, d, u0_, p), (jnp.zeros_like(u),), (u,))[1], d, u0_, p))(us, pts)
                aff = jax.vmap(lambda p: at_points(parts(offset, d, u0_, p), d, u0_, p))(idx)
                return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(cts), jax.tree.leaves(lin_r))) + \
                    sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a_w), jax.tree.leaves(aff)))

            ct_dyn_pde, ct_u0 = jax.grad(pairing, argnums=(0, 1))(pde_dynamic, u0)
        ct_dynamic = eqx.tree_at(lambda c: c.pde, jax.tree.map(jnp.zeros_like, dynamic),
                                 ct_dyn_pde) if jax.tree.leaves(dynamic) else dynamic
        return ct_dynamic, ct_B, ct_offset, ct_u0, None, None

    fit.defvjp(fit_fwd, fit_bwd)
    return fit(dynamic, B, offset, u0, idx, w0)
