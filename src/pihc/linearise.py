r"""The affine decomposition of a PDE's terms and rows for ``u = B w + offset``.

A PDE's terms and its initial/boundary rows are affine in ``u``
(:class:`~pihc.pdes.PDE`): ``f(u) = L u + f(0)``.  For ``u = B w + offset``,

.. math::  f(B w + o) = \sum_i L(B_{:, i})\, w_i + f(o),

so the constraint layer evaluates the linear part ``L`` on each basis column
once per forward pass and every solver iteration reuses it.  This module
forms that decomposition (:func:`linearise`) and holds the map from a grid
field to the terms and rows (:class:`RowMap`), which the experts' adjoint
transposes (:class:`~pihc.constraint.ExpertsProblem`).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .grid import Grid
from .pdes.base import PDE

__all__ = ["InitialCondition", "Linearisation", "RowMap", "initial_by_construction", "linearise"]

InitialCondition = Literal["rows", "construction"]

# Basis columns per pass of the forward linearisation: eight float64 columns fill one 64-byte
# cache line of the (points, terms, columns) output, and eight columns' intermediates on a
# 16 x 64 x 64 grid (a few MB of complex spectra) stay in a core's share of the cache.
_CHUNK = 8


class RowMap(eqx.Module):
    """``u -> (terms, rows)``: a PDE's terms on the grid and its initial then boundary rows.

    Both are affine in ``u``.  The PDE's array fields and ``u0`` are this
    module's array leaves, so they are differentiated like any input.
    ``initial=False`` leaves the initial rows out: under
    :func:`initial_by_construction` (``u(t_0) = u0`` for every ``w``) they are
    zero by the PDE's contract (:meth:`~pihc.pdes.PDE.initial_rows`), and
    each would still cost its share of every solve (one per point of the
    first time level, against a few hundred PDE rows per expert).
    """

    pde: PDE
    u0: Float[Array, "*space"]
    grid: Grid = eqx.field(static=True)
    initial: bool = eqx.field(static=True, default=True)

    def __call__(self, u: Float[Array, "*grid"]) -> tuple[Float[Array, "*grid n_terms"], Float[Array, " n_rows"]]:
        initial = [self.pde.initial_rows(u, self.u0, self.grid)] if self.initial else []
        rows = jnp.concatenate(initial + [self.pde.boundary_rows(u, self.grid)])
        if rows.shape[0] == 0:
            # No rows at all (periodic, the initial condition by construction): one zero row, which the
            # layer weighs 0, so that no array of the experts' problems is empty (XLA's sharding pass
            # refuses an empty operand of the experts' shard_map).
            rows = jnp.zeros((1,), u.dtype)
        return self.pde.terms(u, self.grid), rows

    def at(self, out, points: Int[Array, "*P"]):
        """The terms' rows at flat grid ``points`` (``(*P, n_terms, *columns)``), the rows unchanged.

        Linear, and acting on the leading axes alone: it applies to one
        field's output and to the stacked outputs of many alike.
        """
        terms, rows = out
        return terms.reshape((self.grid.size,) + terms.shape[self.grid.ndim:])[points], rows

    def linear(self, u: Float[Array, "*grid"], points: Int[Array, "*P"]):
        """The linear part at the points: ``L u`` (the tangent map, constants dropped)."""
        return self.at(jax.jvp(self, (jnp.zeros_like(u),), (u,))[1], points)


class Linearisation(eqx.Module):
    """``u = B w + offset`` and the affine parts of the terms and rows in ``w``.

    Attributes:
        B, offset: the parametrisation of ``u``.
        terms: the terms' linear part on each basis column, ``(*P, n_terms, N)``
            at the points (``*P`` is ``*grid`` when no points are given).
        terms_offset: the terms of ``offset``, ``(*P, n_terms)``.
        rows: the initial then boundary rows' linear part, ``(n_rows, N)``.
        rows_offset: the rows of ``offset``, ``(n_rows,)``.

    So ``terms(B w + offset) = terms @ w + terms_offset`` and likewise for the rows.
    """

    B: Float[Array, "*grid N"]
    offset: Float[Array, "*grid"]
    terms: Float[Array, "*P n_terms N"]
    terms_offset: Float[Array, "*P n_terms"]
    rows: Float[Array, "n_rows N"]
    rows_offset: Float[Array, " n_rows"]


def initial_by_construction(B: Float[Array, "*grid N"], offset: Float[Array, "*grid"],
                            u0: Float[Array, "*space"], grid: Grid
                            ) -> tuple[Float[Array, "*grid N"], Float[Array, "*grid"]]:
    r"""Impose ``u(t_0) = u_0`` exactly: ``u = u_0 + s(t) (B w + offset)``.

    ``s(t) = (t - t_0) / (t_1 - t_0)`` on the first (time) axis vanishes at
    the initial time, so every weight vector satisfies the initial condition
    and the initial rows are identically zero.  Scaling by ``t / T`` keeps
    the basis values O(1) elsewhere.  Works for any PDE whose first axis is time.
    """
    t = grid.axes[0]
    s = jnp.asarray((t.coords - t.lo) / (t.hi - t.lo), B.dtype).reshape((-1,) + (1,) * (B.ndim - 2))
    return s[..., None] * B, jnp.broadcast_to(u0, offset.shape) + s * offset


def parametrise(pde: PDE, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], grid: Grid,
                initial_condition: InitialCondition = "rows"
                ) -> tuple[Float[Array, "*grid N"], Float[Array, "*grid"]]:
    """``(B, offset)``: ``pde.parametrise``, composed with :func:`initial_by_construction` if asked."""
    B, offset = pde.parametrise(basis, u0, grid)
    if initial_condition == "construction":
        B, offset = initial_by_construction(B, offset, u0, grid)
    return B, offset


def linearise(pde: PDE, basis: Float[Array, "*grid N"], u0: Float[Array, "*space"], grid: Grid,
              initial_condition: InitialCondition = "rows", points: Int[Array, "*P"] | None = None
              ) -> Linearisation:
    """The affine decomposition of the PDE's terms and rows for ``u = B w + offset``.

    ``(B, offset)`` come from :func:`parametrise`.  Given ``points`` (flat
    grid indices, any shape), the terms are taken there only.
    """
    B, offset = parametrise(pde, basis, u0, grid, initial_condition)
    return linearise_parametrised(RowMap(pde, u0, grid), B, offset, points)


def linearise_parametrised(row_map: RowMap, B: Float[Array, "*grid N"], offset: Float[Array, "*grid"],
                           points: Int[Array, "*P"] | None = None) -> Linearisation:
    """:func:`linearise` for an already parametrised ``u = B w + offset``."""
    dynamic, static = eqx.partition(row_map, eqx.is_inexact_array)
    # One pass over the basis columns for terms and rows together (see _columns).
    (terms, rows), (terms_offset, rows_offset) = _affine_parts(
        functools.partial(_call_row_map, static), None if points is None else functools.partial(_at, static),
        B, offset, dynamic, points)
    return Linearisation(B, offset, terms, terms_offset, rows, rows_offset)


def _call_row_map(static, u, dynamic, points):
    return eqx.combine(dynamic, static)(u)


def _at(static, out, dynamic, points):
    return eqx.combine(dynamic, static).at(out, points)


def _affine_parts(f, select, basis, offset, *args):
    """Linear part of an affine ``f(u, *args)`` on each basis column, and ``f(offset, *args)``.

    ``L`` is ``f``'s tangent map (a JVP), not ``f(B_i) - f(0)``: the
    difference adds ``f``'s constant terms to every column and subtracts them
    again, a full pass over the (points x terms x columns) output, and it
    loses digits where the constant dominates a column's value (a ghost
    value's boundary term).  ``f`` must not close over traced values: pass
    them in ``args``.
    """

    def linear(u, *args):
        return jax.jvp(lambda v: f(v, *args), (jnp.zeros_like(u),), (u,))[1]

    offset_parts = f(offset, *args)
    return _columns(linear, select, basis, *args), \
        offset_parts if select is None else select(offset_parts, *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _columns(f, select, basis, *args):
    """``select(f(column, *args), *args)`` for every column of ``basis`` (its trailing axis), stacked last.

    ``select`` (or None: the identity) must be linear and act on the leading
    axes of ``f``'s outputs alone, so that it applies to one column's outputs
    and to all columns' stacked ones alike (e.g. taking rows at some
    points).  Forward, it runs on a few columns at a time (``_CHUNK``), each
    chunk selected at once and written into its slot of the output: over
    all columns at once, a spectral PDE's transforms streamed the whole
    basis through memory at every stage and the full-grid terms were written
    out before the gather; a (points x terms x columns) output assembled by
    a transpose instead of in place slowed its readers in the backward pass.

    VJP.  The map is linear in ``basis``, so its transpose applied to the
    cotangent ``ct`` is, column by column, ``vjp(f_i)(ct_i)``; the cotangent
    of ``args`` is the sum over columns of each column's.  ``f`` (a PDE's
    stencils) is built from slices, whose transposes are pads to the whole
    grid.  Batched over all columns at once, XLA materialised those pads at
    full size (grid x columns x batch) and summed them in one many-input
    fusion; here the transpose runs one column at a time (``lax.map``), so
    each pad is one grid's worth and stays in cache.
    """
    def column(u):
        out = f(u, *args)
        return out if select is None else select(out, *args)

    n = basis.shape[-1]
    c = math.gcd(n, _CHUNK)
    batched = jax.vmap(column, in_axes=0, out_axes=-1)
    # The columns first, once: sliced from the trailing axis inside the loop, each chunk's read
    # touched every cache line of the basis, n / c times over.
    columns = jnp.moveaxis(basis, -1, 0)
    shapes = jax.eval_shape(batched, columns[:c])
    init = jax.tree.map(lambda a: jnp.zeros(a.shape[:-1] + (n,), a.dtype), shapes)

    def body(i, acc):
        part = batched(jax.lax.dynamic_slice_in_dim(columns, i * c, c, axis=0))
        return jax.tree.map(lambda a, p: jax.lax.dynamic_update_slice_in_dim(a, p, i * c, axis=-1), acc, part)

    return jax.lax.fori_loop(0, n // c, body, init)


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
    it = iter(jax.tree.map(lambda c: jnp.sum(c, axis=0), ct_floats))
    return (jnp.moveaxis(ct_cols, 0, -1), *[next(it) if d else None for d in inexact])


_columns.defvjp(_columns_fwd, _columns_bwd)
