r"""The hard-constraint layer (PI-HC) and its mixture of experts (PI-HC-MoE).

Given a basis ``b`` of shape ``(*grid, N)`` from a network, the layer finds
weights so that ``u = B w + offset`` (``(B, offset) = pde.parametrise(b)``)
satisfies the PDE at sampled points.  The grid is cut into
``K = prod(splits)`` blocks (:func:`~pihc.partition.partition`); expert ``k``
solves its own problem (:class:`~pihc.experts.ExpertProblem`)

.. math::
    \min_{w_k}\; \frac{\lambda_{pde}}{m} \sum_{j \in S_k} F(\Phi_j w_k + c_j)^2
      + \frac{\lambda_{ic}}{n_{ic}} \lVert M^{ic}_k (A^{ic} w_k + a^{ic}) \rVert^2
      + \frac{\lambda_{bc}}{n_{bc}} \lVert M^{bc}_k (A^{bc} w_k + a^{bc}) \rVert^2
      + \rho^2 \lVert w_k \rVert^2,

where ``S_k`` are ``m`` points drawn without replacement from block ``k``'s
part of ``pde.residual_domain`` (:mod:`pihc.sampling`), ``Phi_j`` are the PDE
terms of the basis at point ``j`` (:mod:`pihc.linearise`, computed once per
forward pass), ``F = pde.residual`` and the ``M`` masks select the
initial/boundary rows: all of them for every expert (``row_scope="global"``,
the paper's choice) or only those inside block ``k`` (``"local"``).  The
solution on block ``k`` is ``u = B w_k + offset``.  One expert is PI-HC.

The parts: a :class:`~pihc.sampling.PointSampler` draws the points; an
:class:`ExpertsProblem` (the experts' problems as functions of the basis, the
PDE and ``u0``) is solved by a :class:`~pihc.least_squares.LevenbergMarquardt`
per expert and differentiated by an adjoint object (:mod:`pihc.adjoint`);
the layer assembles ``u``.  The experts share nothing, so their solves are a
``vmap`` on one device and, given a ``mesh`` (:mod:`pihc.sharding`), a
:func:`jax.shard_map` over its ``expert`` axis: each device runs the loops of
its ``K/E`` experts (vmapped) to their own convergence, never waiting for
another device's experts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .adjoint import AbstractAdjoint, StructuredAdjoint
from .experts import ExpertProblem, RowWeights
from .grid import Grid, GridError
from .least_squares import RESULTS, LevenbergMarquardt, Solution, require_x64
from .linearise import InitialCondition, Linearisation, RowMap, linearise_parametrised, parametrise
from .partition import blend_windows, check_splits, partition, unpartition
from .pdes.base import PDE
from .sampling import PointSampler, sampling_domains
from .sharding import EXPERT

__all__ = ["ConstrainedSolution", "ExpertLoop", "ExpertsProblem", "HardConstraint", "RowScope", "Start"]

RowScope = Literal["global", "local"]
Start = Literal["row_fit", "zeros"]
ExpertLoop = Literal["vmap", "sequential"]


class ConstrainedSolution(eqx.Module):
    """Output of :class:`HardConstraint`.

    Attributes:
        u: the constrained prediction on the grid.
        weights: each expert's weights ``w_k``, ``(K, N)``.
        solution: the solver's :class:`~pihc.least_squares.Solution`, one entry per expert.
            An expert whose part of ``u`` is not finite has status ``nonfinite``.
        points: flat grid indices of each expert's sampled points, ``(K, m)``.
    """

    u: Float[Array, "*grid"]
    weights: Float[Array, "K N"]
    solution: Solution
    points: Int[Array, "K m"]


class ExpertsProblem(eqx.Module):
    r"""The K experts' problems as a function of the parametrised basis, the PDE and ``u0``.

    These are the inputs that the adjoint differentiates: ``B``, ``offset``
    and the row map's PDE fields and ``u0``.

    The structured adjoint (:meth:`implicit_cotangent`).  Expert ``k``'s
    problem arrays are linear images of grid fields: its ``Phi`` is the row
    map's linear part ``L_k`` (terms at its points, and rows) applied to the
    columns of ``B``, its constants ``L_k offset + f(0)``.  The implicit
    cotangent of its arrays has rank two (:meth:`ExpertProblem.adjoint_factors`):
    ``sum over (a, x) in {(a_v, v_k), (a_w, w_k)}`` of ``a x^T``.  Pulled back
    through ``Phi = L_k B``,

    .. math::  \bar B = \sum_k L_k^T(a_{v,k})\, v_k^T + L_k^T(a_{w,k})\, w_k^T,
               \qquad \bar{\mathrm{offset}} = \sum_k L_k^T(a_{w,k}),

    so the transposed stencils run on ``2K`` fields, not on ``N`` basis
    columns, and the (points x terms x N) cotangent of ``Phi`` is never
    formed.  The PDE's fields and ``u0`` enter the coefficients and constants
    of ``L_k``; their cotangent is the gradient of the pairing
    ``sum <a, L_k(B x) + f_k(offset)>`` in them.
    """

    B: Float[Array, "*grid N"]
    offset: Float[Array, "*grid"]
    row_map: RowMap
    points: Int[Array, "K m"]
    row_scale: Float[Array, "K n_rows"]
    pde_scale: float = eqx.field(static=True)
    ridge: float = eqx.field(static=True)
    mesh: Mesh | None = eqx.field(static=True, default=None)
    expert_loop: ExpertLoop = eqx.field(static=True, default="vmap")

    def linearise(self) -> Linearisation:
        """The terms at every expert's points and the rows, in one pass over the basis columns."""
        return linearise_parametrised(self.row_map, self.B, self.offset, self.points)

    def experts(self, lin: Linearisation) -> ExpertProblem:
        """The experts' :class:`~pihc.experts.ExpertProblem`, stacked (leading axis K)."""
        return ExpertProblem(lin.terms, lin.terms_offset, lin.rows, lin.rows_offset, self.row_scale,
                             self.row_map.pde, self.pde_scale, self.ridge)

    def solve(self, w0: Float[Array, "K N"] | None, solver: LevenbergMarquardt
              ) -> tuple[Solution, Linearisation]:
        """Every expert's Levenberg-Marquardt solve (``w0`` None: from the fit of its rows)."""
        with jax.named_scope("pihc.constraint.problems"), jax.named_scope("linearise"):
            lin = self.linearise()
        with jax.named_scope("pihc.constraint.solve"):
            def one(p: ExpertProblem, w):
                gram = p.rows_gram()
                return solver.solve(lambda v: p.normal_equations(v, gram), p.row_fit(gram) if w is None else w,
                                    curvature=p.curvature)

            sol = _replicated(_vmap_experts(one, self.experts(lin), w0, mesh=self.mesh, loop=self.expert_loop),
                              self.mesh)
        return sol, lin

    def optimality(self, W: Float[Array, "K N"]) -> Float[Array, "K N"]:
        """Every expert's ``grad_w 1/2 ||r||^2`` at ``W``, by autodiff (the generic adjoint's input)."""
        return _vmap_experts(ExpertProblem.optimality, self.experts(self.linearise()), W)

    def implicit_cotangent(self, W: Float[Array, "K N"], status: Int[Array, " K"], ct_W: Float[Array, "K N"],
                           lin: Linearisation) -> "ExpertsProblem":
        """The structured adjoint (class docstring); ``lin`` is the forward pass's linearisation."""
        with jax.named_scope("pihc.constraint.solve"):
            experts = self.experts(lin)
            # The factors are all-gathered once, here: the transposed stencils below read them in a loop.
            # Batched whatever expert_loop says: each expert's work here is fixed (no loop to
            # convergence), and one after the other each expert's Phi would be sliced out (copied).
            a_v, a_w, v = _replicated(_vmap_experts(lambda p, w, s, ct: p.adjoint_factors(w, s, ct, p.rows_gram()),
                                                    experts, W, status, ct_W, mesh=self.mesh), self.mesh)
            ok = (status == RESULTS.successful)[:, None]
            W_ok = jnp.where(ok, W, 0.0)  # a failed solve's w may be NaN; its v is 0
            # The PDE's constants also enter F itself, per expert; summed over the experts.  A PDE
            # without array fields has none to differentiate: skipped (XLA did not drop the map's
            # passes over Phi when their result was empty).
            ct_pde_F = None if not jax.tree.leaves(eqx.filter(self.row_map.pde, eqx.is_inexact_array)) else \
                jax.tree.map(
                    lambda c: jnp.sum(jnp.where(ok.reshape((-1,) + (1,) * (c.ndim - 1)), c, 0.0), axis=0),
                    _vmap_experts(ExpertProblem.pde_cotangent, experts, W_ok, v, mesh=self.mesh))
        with jax.named_scope("pihc.constraint.problems"):
            dynamic, static = eqx.partition(self.row_map, eqx.is_inexact_array)
            # The 2K left factors with their expert's points and right factors (v_k, then w_k).
            factors = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), a_v, a_w)
            pts = _replicated(jnp.concatenate([self.points, self.points]), self.mesh)  # read in the loop below
            right = jnp.concatenate([v, W_ok])

            def transposed(xs):  # L_k^T(a), one field at a time (as linearise._columns does)
                a, p = xs
                return jax.vjp(lambda u: self.row_map.linear(u, p), jnp.zeros_like(self.offset))[1](a)[0]

            fields = jax.lax.map(transposed, (factors, pts))  # (2K, *grid)
            K = self.points.shape[0]
            ct_B = jnp.einsum("r...,rn->...n", fields, right)
            ct_offset = jnp.sum(fields[K:], axis=0)  # offset enters the constants: a_w's parts

            def pairing(dyn):
                row_map = eqx.combine(dyn, static)
                us = jnp.einsum("...n,rn->r...", self.B, right)
                lin_r = jax.vmap(row_map.linear)(us, pts)
                const = jax.vmap(lambda p: row_map.at(row_map(self.offset), p))(self.points)
                return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(factors), jax.tree.leaves(lin_r))) + \
                    sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a_w), jax.tree.leaves(const)))

            ct_row_map = jax.grad(pairing)(dynamic)
            if ct_pde_F is not None:
                ct_row_map = eqx.tree_at(lambda r: r.pde, ct_row_map, jax.tree.map(
                    lambda a, b: a + b, ct_row_map.pde, eqx.filter(ct_pde_F, eqx.is_array)))
        none = jax.tree.map(lambda _: None, self)
        return eqx.tree_at(lambda c: (c.B, c.offset, c.row_map), none, (ct_B, ct_offset, ct_row_map),
                           is_leaf=lambda x: x is None)


def _vmap_experts(fn, problem: ExpertProblem, *per_expert, mesh: Mesh | None = None, loop: ExpertLoop = "vmap"):
    """``fn(problem_k, *args_k)`` for every expert: the problem's per-expert arrays mapped, the rest shared.

    ``loop``: ``"vmap"`` runs the experts batched (a ``while_loop`` in ``fn``
    then iterates until the last of them is done, every expert computing on
    each iteration); ``"sequential"`` runs them one after the other
    (``lax.map``), each to its own convergence.

    With a ``mesh``, under :func:`jax.shard_map` over its ``expert`` axis:
    each device maps ``fn`` over its own ``K/E`` experts (their per-expert
    arrays are its blocks of the stacked ones; the shared arrays are
    replicated), and the outputs (leading axis ``K``) stay split along
    ``expert``.  Nothing in ``fn`` communicates, so a ``while_loop`` in it
    runs on each device until that device's experts are done.
    """
    in_axes = (_expert_axes(problem),) + tuple(None if a is None else 0 for a in per_expert)
    mapped = jax.vmap(fn, in_axes=in_axes) if loop == "vmap" else _sequential(fn, in_axes)
    if mesh is None:
        return mapped(problem, *per_expert)
    args = (problem, *per_expert)
    is_none = lambda x: x is None  # noqa: E731
    leaves, treedef = jax.tree.flatten(args, is_leaf=is_none)
    axes = jax.tree.leaves(in_axes, is_leaf=is_none)
    arrays = [i for i, x in enumerate(leaves) if eqx.is_array(x)]

    def local(*blocks):  # one device's experts; the non-array leaves are static
        filled = list(leaves)
        for i, b in zip(arrays, blocks):
            filled[i] = b
        return mapped(*jax.tree.unflatten(treedef, filled))

    specs = tuple(PartitionSpec(EXPERT) if axes[i] == 0 else PartitionSpec() for i in arrays)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(EXPERT),
                         check_vma=False)(*[leaves[i] for i in arrays])


def _sequential(fn, in_axes):
    """``jax.vmap(fn, in_axes)`` as a ``lax.map`` over the leading axis of the mapped arguments (axis 0)."""
    is_none = lambda x: x is None  # noqa: E731

    def mapped(*args):
        leaves, treedef = jax.tree.flatten(args, is_leaf=is_none)
        axes = jax.tree.leaves(in_axes, is_leaf=is_none)
        which = [i for i, a in enumerate(axes) if a == 0]

        def one(xs):
            filled = list(leaves)
            for i, x in zip(which, xs):
                filled[i] = x
            return fn(*jax.tree.unflatten(treedef, filled))

        return jax.lax.map(one, [leaves[i] for i in which])

    return mapped


def _replicated(tree, mesh: Mesh | None):
    """``tree`` on every device of the ``expert`` axis (an all-gather of the experts' blocks; under the
    samples' ``vmap(spmd_axis_name=...)`` still split along the samples' axis)."""
    if mesh is None:
        return tree
    arrays, rest = eqx.partition(tree, eqx.is_array)
    return eqx.combine(jax.lax.with_sharding_constraint(arrays, NamedSharding(mesh, PartitionSpec())), rest)


def _expert_axes(problem: ExpertProblem):
    # Per expert: its points' terms and its row weights.  Shared: the rows and the PDE.
    axes = jax.tree.map(lambda _: None, problem)
    return eqx.tree_at(lambda p: (p.phi, p.c, p.row_scale), axes, (0, 0, 0), is_leaf=lambda x: x is None)


class HardConstraint(eqx.Module):
    """PI-HC (one expert) and PI-HC-MoE (``prod(splits)`` experts).

    Args:
        pde: the :class:`~pihc.pdes.PDE`, with its physical constants.
        grid: the space-time grid of the basis.
        splits: experts per grid axis, e.g. ``(1, 4)`` for t1 x4; all ones is PI-HC.
        n_points: residual points sampled per expert (without replacement).
        row_scope: ``"global"``: every expert fits all initial/boundary rows
            (the paper); ``"local"``: only the rows inside its block.
        row_weights: :class:`~pihc.experts.RowWeights`, the weights of the
            blocks of each expert's problem.
        solver: :class:`~pihc.least_squares.LevenbergMarquardt`.
        start: the solver's starting weights: ``"row_fit"`` fits the linear
            rows alone (initial/boundary rows and ridge; a closed-form N x N
            solve), so the PDE solve starts from a ``u`` that already
            matches the data and is close to linear there; ``"zeros"``
            starts from ``w = 0``, a poor start for PDEs that are stiff at
            ``u = 0`` (diffusion-sorption's R(u) ~ u^(n_f - 1)).
        initial_condition: ``"rows"`` (the initial condition as rows in every
            expert's problem, weighed by ``row_weights.initial``; the paper's
            diffusion-sorption setting) or ``"construction"``
            (``u = u0 + (t - t0)/(T - t0) (B w + offset)``, exact for every
            ``w``; :func:`~pihc.linearise.initial_by_construction`).  With
            rows, the solver trades the initial rows against the PDE rows,
            whose units differ; by construction there is nothing to trade.
        overlap: per grid axis, how many grid points beyond its block an
            expert also samples residual points from (default none: the
            paper's disjoint blocks).  It ties neighbouring experts'
            solutions together at the seams.
        blend: predict with a smooth partition of unity over the experts
            (:func:`~pihc.partition.blend_windows`) instead of each expert on
            its own block: ``u = sum_k chi_k B w_k + offset``, ``chi_k``
            falling from 1 to 0 across ``overlap`` points on each side of a
            seam, where both neighbours fit their PDE rows.  ``u`` is then as
            smooth across seams as the basis.  Needs ``overlap`` (at most
            half a block on the split axes).
        adjoint: how the solves are differentiated:
            :class:`~pihc.adjoint.StructuredAdjoint` (default; see
            :class:`ExpertsProblem`) or :class:`~pihc.adjoint.ImplicitAdjoint`
            (generic autodiff of the optimality condition, the reference).
        mesh: a :class:`jax.sharding.Mesh` with an ``expert`` axis
            (:func:`~pihc.sharding.device_mesh`) whose size divides the
            number of experts: the experts' solves, and the per-expert parts
            of their adjoint, run under :func:`jax.shard_map` along it
            (module docstring).  Default None: one device, ``vmap``.  The
            values are the same either way.
        expert_loop: how one device runs its experts' solves (their
            adjoints, fixed work per expert, are always batched):
            ``"vmap"`` (default; batched: every expert computes on each
            iteration until the slowest has converged, which suits an
            accelerator) or ``"sequential"`` (``lax.map``: one expert after
            the other, each stopping at its own convergence, which suits a
            CPU, where the batched experts' work is not in parallel).  The
            values are the same either way.
        time_slabs: cut the time axis (the first) into this many slabs
            solved one after the other (default 1: one solve over all
            times).  Slab ``j`` spans time levels ``a_j .. a_{j+1}``
            (``a_j = floor(j (n_t - 1) / time_slabs)``), sharing its first
            level with the slab before; its experts (``splits`` on the
            slab) impose as initial condition, by construction, the
            prediction of slab ``j - 1`` at that shared level:
            ``u = u(t_{a_j}) + (t - t_{a_j}) / (t_{a_{j+1}} - t_{a_j}) (B w + offset)``.
            Each slab's experts have their own weights, so the prediction
            has ``time_slabs`` times as many, each fitting the PDE over a
            shorter time, and the gradient flows back through the chain of
            initial conditions.  ``n_points`` is per expert and slab.
            Needs ``initial_condition="construction"`` and ``splits[0] == 1``.
            For a one-step time stencil (each residual row reads two
            consecutive levels) the rows are those of one solve over all
            times; a multistep stencil restarts at its first-order start
            in each slab.

    Raises:
        GridError: ``splits`` does not divide the grid.
        ValueError: an option is invalid, or more points are asked for than
            a block's domain holds.
    """

    pde: PDE
    grid: Grid = eqx.field(static=True)
    splits: tuple[int, ...] = eqx.field(static=True)
    n_points: int = eqx.field(static=True)
    row_scope: RowScope = eqx.field(static=True, default="global")
    row_weights: RowWeights = eqx.field(static=True, default=RowWeights())
    solver: LevenbergMarquardt = eqx.field(static=True, default=LevenbergMarquardt())
    start: Start = eqx.field(static=True, default="row_fit")
    initial_condition: InitialCondition = eqx.field(static=True, default="rows")
    overlap: tuple[int, ...] | None = eqx.field(static=True, default=None)
    blend: bool = eqx.field(static=True, default=False)
    adjoint: AbstractAdjoint = eqx.field(static=True, default=StructuredAdjoint())
    mesh: Mesh | None = eqx.field(static=True, default=None)
    expert_loop: ExpertLoop = eqx.field(static=True, default="vmap")
    time_slabs: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        _check_choice("row_scope", self.row_scope, RowScope)
        _check_choice("expert_loop", self.expert_loop, ExpertLoop)
        _check_choice("start", self.start, Start)
        _check_choice("initial_condition", self.initial_condition, InitialCondition)
        for name, cls in (("row_weights", RowWeights), ("solver", LevenbergMarquardt),
                          ("adjoint", AbstractAdjoint)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        if isinstance(self.n_points, bool) or not isinstance(self.n_points, int) or self.n_points < 1:
            raise ValueError(f"n_points must be an integer >= 1, got {self.n_points!r}")
        if isinstance(self.time_slabs, bool) or not isinstance(self.time_slabs, int) or self.time_slabs < 1:
            raise ValueError(f"time_slabs must be an integer >= 1, got {self.time_slabs!r}")
        if self.time_slabs > 1:
            self._check_slabs()
            return
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
        try:
            self.sampler()
        except ValueError as err:
            raise ValueError(f"{err} (grid {self.grid.shape}, splits {self.splits})") from None
        if self.mesh is not None:
            if EXPERT not in self.mesh.axis_names:
                raise ValueError(f"mesh needs an axis named {EXPERT!r}; it has {self.mesh.axis_names}")
            if self.n_experts % self.mesh.shape[EXPERT]:
                raise ValueError(f"the mesh's {EXPERT} axis ({self.mesh.shape[EXPERT]} devices) does not divide"
                                 f" the {self.n_experts} expert(s) of splits {self.splits}")

    def _check_slabs(self) -> None:
        t = self.grid.axes[0]
        if self.initial_condition != "construction":
            raise ValueError("time_slabs > 1 passes each slab's last level on as the next slab's initial"
                             " condition, imposed by construction: set initial_condition='construction'")
        if t.kind != "nodes":
            raise ValueError(f"time_slabs > 1 cuts the first axis, time, at shared levels: axis {t.name!r}"
                             f" must be of kind 'nodes', got {t.kind!r}")
        if self.time_slabs > t.n - 1:
            raise ValueError(f"time_slabs {self.time_slabs} is more than the {t.n - 1} time steps of axis"
                             f" {t.name!r} ({t.n} levels); use at most {t.n - 1}")
        if self.splits[0] != 1:
            raise ValueError(f"time_slabs cut the time axis already; splits[0] must be 1, got splits {self.splits}")
        self.pde.check_grid(self.grid)
        try:
            self.slabs()  # each slab's own checks (grid, splits, blend, points)
        except ValueError as err:
            raise ValueError(f"a time slab of {self.time_slabs}: {err}") from None

    @property
    def n_experts(self) -> int:
        """Experts per time slab: ``prod(splits)`` (each solve's; sharded along a mesh's ``expert`` axis)."""
        return math.prod(self.splits)

    def slab_bounds(self) -> tuple[tuple[int, int], ...]:
        """Each time slab's levels as ``(start, stop)`` (stop exclusive); consecutive slabs share a level."""
        n = self.grid.axes[0].n - 1
        cuts = [j * n // self.time_slabs for j in range(self.time_slabs + 1)]
        return tuple((cuts[j], cuts[j + 1] + 1) for j in range(self.time_slabs))

    def slabs(self) -> tuple["HardConstraint", ...]:
        """This layer on each time slab's levels alone (:meth:`slab_bounds`), one slab each."""
        t = self.grid.axes[0]
        return tuple(dataclasses.replace(self, time_slabs=1, grid=Grid((dataclasses.replace(
            t, n=b - a, lo=float(t.coords[a]), hi=float(t.coords[b - 1])),) + self.grid.axes[1:]))
            for a, b in self.slab_bounds())

    def tied(self) -> "HardConstraint":
        """The experts' problems with one weight vector shared by all: one expert over the
        whole grid with ``n_points * n_experts`` points, the same rows and weights.

        With every expert's ``w_k`` set equal, the sum of their objectives is
        a single least-squares problem over the union of their points; this
        is that problem (its points drawn uniformly over the grid).
        PI-HC-MoE's training uses it for ``constraint.global_steps``.
        """
        one = self.mesh is None or self.mesh.shape[EXPERT] == 1
        return dataclasses.replace(self, splits=(1,) * self.grid.ndim, overlap=None, blend=False,
                                   n_points=self.n_points * self.n_experts, mesh=self.mesh if one else None)

    def on_mesh(self, mesh: Mesh | None) -> "HardConstraint":
        """This layer with its experts' solves sharded along ``mesh``'s ``expert`` axis (None: one device)."""
        return dataclasses.replace(self, mesh=mesh)

    def windows(self) -> np.ndarray:
        """(K, *grid): each expert's share of the blended prediction, summing to 1 (see ``blend``)."""
        return blend_windows(self.grid.shape, self.splits, self.overlap, self._periodic())

    def sampling_domains(self) -> np.ndarray:
        """(K, G) bool over the flattened grid: where each expert samples (:func:`~pihc.sampling.sampling_domains`)."""
        return sampling_domains(self.pde.residual_domain(self.grid), self.splits, self.overlap, self._periodic())

    def _periodic(self) -> tuple[bool, ...]:
        # Experts are neighbours across the wrap of a periodic axis (grid metadata, not the PDE).
        return tuple(a.periodic for a in self.grid.axes)

    def sampler(self) -> PointSampler:
        return PointSampler(self.sampling_domains(), self.n_points)

    @property
    def _initial_rows(self) -> bool:
        """Whether the experts carry the initial rows: not by construction, where they are zero for every
        ``w`` (:class:`~pihc.linearise.RowMap`)."""
        return self.initial_condition == "rows"

    def row_scale(self) -> np.ndarray:
        """(K, n_rows): each expert's weight on each initial/boundary row (``S``'s diagonal).

        Each block is a mean of squares over the rows the expert has; a row
        it does not have weighs 0.
        """
        scales = []
        initial = [(self.pde.initial_row_points(self.grid), self.row_weights.initial)] if self._initial_rows else []
        for points, weight in initial + [(self.pde.boundary_row_points(self.grid), self.row_weights.boundary)]:
            mask = _row_masks(np.asarray(points), self.grid.shape, self.splits) if self.row_scope == "local" \
                else np.ones((self.n_experts, len(points)), bool)
            scales.append(np.sqrt(weight / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)) * mask)
        scale = np.concatenate(scales, axis=1)
        return scale if scale.shape[1] else np.zeros((self.n_experts, 1))  # RowMap's zero row, weighed 0

    def problem(self, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], key: PRNGKeyArray
                ) -> ExpertsProblem:
        """The experts' problems for this basis and initial condition, at points drawn with ``key``
        (one slab's: with ``time_slabs > 1``, each of :meth:`slabs` has its own)."""
        require_x64()
        if self.time_slabs > 1:
            raise ValueError(f"this layer solves {self.time_slabs} time slabs in turn; take the problem"
                             " of one of its slabs() with that slab's basis and initial condition")
        self.grid.check(basis, channels=1, what="basis")
        if tuple(jnp.shape(u0)) != self.grid.shape[1:]:
            raise GridError(f"u0 has shape {tuple(jnp.shape(u0))}; the grid {self.grid.names} needs"
                            f" {self.grid.shape[1:]} (one value per point of the axes after time)")
        # Named scopes label the parts in profiles (jax.profiler, XLA dumps).
        with jax.named_scope("pihc.constraint.problems"):
            u0 = jnp.asarray(u0, jnp.float64)
            with jax.named_scope("sample"):
                points = self.sampler().sample(key)
            B, offset = parametrise(self.pde, basis.astype(jnp.float64), u0, self.grid, self.initial_condition)
            return ExpertsProblem(B, offset, RowMap(self.pde, u0, self.grid, self._initial_rows), points,
                                  jnp.asarray(self.row_scale()), math.sqrt(self.row_weights.pde / self.n_points),
                                  self.row_weights.ridge, self.mesh, self.expert_loop)

    def __call__(self, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"],
                 key: PRNGKeyArray) -> ConstrainedSolution:
        if self.time_slabs > 1:
            return self._march(basis, u0, key)
        problem = self.problem(_materialised_cotangent(basis), u0, key)
        B, offset, points = problem.B, problem.offset, problem.points
        w0 = None if self.start == "row_fit" else jnp.zeros((self.n_experts, basis.shape[-1]), jnp.float64)
        sol = self.adjoint.apply(ExpertsProblem.solve, ExpertsProblem.optimality, problem, w0, self.solver)
        with jax.named_scope("pihc.constraint.assemble"):
            if self.blend:
                chi = self.windows()
                each = jnp.einsum("...n,kn->k...", B, sol.value)  # every expert on the whole grid
                u = jnp.einsum("k...,k...->...", jnp.asarray(chi, each.dtype), each) + offset
                owned = chi > 0
            else:
                blocks = partition(B, self.splits)  # (K, *block, N)
                u = unpartition(jnp.einsum("k...n,kn->k...", blocks, sol.value), self.splits) + offset
                owned = None
            sol = _flag_nonfinite(sol, u, self.splits, owned)
        return ConstrainedSolution(u=_materialised_cotangent(u), weights=sol.value, solution=sol, points=points)

    def _march(self, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], key: PRNGKeyArray
               ) -> ConstrainedSolution:
        """The slabs in time order, each started from the last level of the one before (``time_slabs``).

        The outputs are stacked slab by slab: weights, solutions and points
        (flat indices into the whole grid) carry ``time_slabs * prod(splits)``
        experts, slab 0's first.
        """
        self.grid.check(basis, channels=1, what="basis")
        level = math.prod(self.grid.shape[1:])  # flat indices per time level
        keys = jax.random.split(key, self.time_slabs)
        start, parts, outs = u0, [], []
        for j, (slab, (a, b)) in enumerate(zip(self.slabs(), self.slab_bounds())):
            out = slab(basis[a:b], start, keys[j])
            parts.append(out.u if j == 0 else out.u[1:])  # the shared level is the slab before's
            outs.append((out.weights, out.solution, out.points + a * level))
            start = out.u[-1]
        stacked = jax.tree.map(lambda *x: jnp.concatenate(x), *outs)
        return ConstrainedSolution(jnp.concatenate(parts), *stacked)


def _flag_nonfinite(sol: Solution, u, splits, owned: np.ndarray | None) -> Solution:
    """Status ``nonfinite`` for every expert whose part of ``u`` is not finite.

    A NaN in the basis away from an expert's points leaves its solve
    finite and converged, but its prediction is not: it is never "converged".
    """
    bad = ~jnp.isfinite(jax.lax.stop_gradient(u))
    if owned is None:
        K = math.prod(splits)
        bad_k = jnp.any(partition(bad, splits).reshape(K, -1), axis=1)
    else:
        bad_k = jnp.any(bad[None] & owned, axis=tuple(range(1, owned.ndim)))
    return eqx.tree_at(lambda s: s.status, sol, jnp.where(bad_k, jnp.int32(RESULTS.nonfinite), sol.status))


def _check_choice(name: str, value, choices) -> None:
    allowed = choices.__args__
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _row_masks(points: np.ndarray, grid_shape, splits) -> np.ndarray:
    """(K, n_rows) bool: which expert's block holds each row's grid point."""
    block = np.array([n // s for n, s in zip(grid_shape, splits)])
    if points.size == 0:
        return np.zeros((math.prod(splits), 0), bool)
    expert = np.ravel_multi_index(tuple((points // block).T), tuple(splits))
    return expert[None, :] == np.arange(math.prod(splits))[:, None]


@jax.custom_vjp
def _materialised_cotangent(x):
    """The identity, whose cotangent is computed once and stored (an optimisation barrier).

    The cotangent of ``u`` is read once per basis column (by the transpose
    of ``u = B w``), and that of the basis by several readers (the
    backbone's projection wants it in more than one layout).  XLA fused
    their producers into each reader, so the loss's whole backward pass (a
    chain of stencil transposes) was re-evaluated for every basis column.
    """
    return x


def _materialised_fwd(x):
    return x, None


def _materialised_bwd(_, ct):
    return (jax.lax.optimization_barrier(ct),)


_materialised_cotangent.defvjp(_materialised_fwd, _materialised_bwd)
