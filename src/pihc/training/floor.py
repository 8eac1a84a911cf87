r"""The discretisation floor: the best a residual-trained model can do on a grid.

A model trained on the residual alone is at best the grid function that
minimises that residual.  :func:`discretisation_floor` finds it,

.. math::  u^\star = \arg\min_u\; \lambda_{pde}\,\mathrm{MSE}(F(u))
           + \lambda_{ic}\,\mathrm{MSE}(\mathrm{ic}(u)) + \lambda_{bc}\,\mathrm{MSE}(\mathrm{bc}(u)),

over all values of ``u`` on the grid (the training loss of
:func:`~pihc.losses.physics_loss`, with every grid value free), by
Levenberg-Marquardt started at the true solution, each step a sparse direct
solve with the exact sparse Jacobian.  Its distance to the converged truth is
the error floor of the grid and of the derivative operators.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..grid import Grid
from ..losses import LossWeights
from ..pdes.base import PDE


def _stacked_residual(pde: PDE, grid: Grid, u0, weights: LossWeights):
    mask = np.asarray(pde.residual_domain(grid))
    n_dom = int(mask.sum())
    flat = np.flatnonzero(mask)

    def r(v):
        u = v.reshape(grid.shape)
        res = pde.residual(pde.terms(u, grid)).reshape(-1)[flat]
        ic = pde.initial_rows(u, u0, grid)
        bc = pde.boundary_rows(u, grid)
        parts = [math.sqrt(weights.pde / n_dom) * res, math.sqrt(weights.initial / ic.size) * ic]
        if bc.size:
            parts.append(math.sqrt(weights.boundary / bc.size) * bc)
        return jnp.concatenate(parts)

    return r


def sparse_jacobian(fn, v: jnp.ndarray, reach: tuple[int, ...], shape: tuple[int, ...]):
    """Exact sparse Jacobian of ``fn`` at ``v`` for grid-local ``fn``, by colouring.

    Each output depends on inputs within ``reach[d]`` grid points of one
    another along axis ``d`` (a stencil); inputs whose indices agree modulo
    ``reach[d] + 1`` on every axis never meet in one output, so one JVP per
    such colour recovers all their columns.  A second JVP per colour with the
    tangent ``column index + 1`` tells which column each entry belongs to.
    """
    import scipy.sparse as sp

    period = tuple(r + 1 for r in reach)
    idx = np.indices(shape).reshape(len(shape), -1)
    colour = np.ravel_multi_index(tuple(i % p for i, p in zip(idx, period)), period)
    n_col = int(np.prod(period))
    probes = np.stack([(colour == c).astype(np.float64) for c in range(n_col)])
    labels = probes * (np.arange(v.size) + 1.0)
    _, lin = jax.linearize(fn, v)
    jl = jax.jit(jax.vmap(lin))
    vals = np.asarray(jl(jnp.asarray(probes)))  # (n_col, rows)
    cols = np.asarray(jl(jnp.asarray(labels)))
    rows, cs, data = [], [], []
    for c in range(n_col):
        nz = np.flatnonzero(vals[c])
        col = np.rint(cols[c, nz] / vals[c, nz]).astype(np.int64) - 1
        rows.append(nz)
        cs.append(col)
        data.append(vals[c, nz])
    rows, cs, data = map(np.concatenate, (rows, cs, data))
    if cs.size and (cs.min() < 0 or cs.max() >= v.size or np.any(colour[cs] != np.repeat(
            np.arange(n_col), [len(np.flatnonzero(vals[c])) for c in range(n_col)]))):
        raise ValueError("the residual reaches further than `reach`; increase it")
    return sp.csr_matrix((data, (rows, cs)), shape=(vals.shape[1], v.size))


def discretisation_floor(pde: PDE, grid: Grid, u_true: np.ndarray, u0: np.ndarray,
                         weights: LossWeights = LossWeights(), gn_steps: int = 30,
                         reach: tuple[int, ...] | None = None, start: np.ndarray | None = None
                         ) -> dict:
    """Minimise the training loss over grid functions, starting at ``u_true``.

    Levenberg-Marquardt with the exact sparse Jacobian
    (:func:`sparse_jacobian`) and a sparse direct solve of the damped normal
    equations ``(J^T J + lam diag(J^T J)) d = -J^T r``; near the minimum
    ``lam`` shrinks and the steps are Gauss-Newton's.  ``reach`` is the stencil
    reach per axis (default 4 points, enough for order-4 one-sided stencils).
    ``start`` (default ``u_true``) lets one ask whether the floor is reachable
    from elsewhere, e.g. from ``u = 0``: a loss whose minimiser a local method
    cannot find from a poor start is one a network will not find either.

    Returns ``{"u": u*, "rel_l2": ||u* - u_true|| / ||u_true||, "loss_true",
    "loss_floor", "gn_steps"}``.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    u0 = jnp.asarray(u0, jnp.float64)
    r = jax.jit(_stacked_residual(pde, grid, u0, weights))
    reach = reach or (4,) * grid.ndim
    loss_true = float(jnp.sum(r(jnp.asarray(u_true, jnp.float64).reshape(-1)) ** 2))
    v = jnp.asarray(u_true if start is None else start, jnp.float64).reshape(-1)
    loss = float(jnp.sum(r(v) ** 2))
    lam, steps = 1e-6, 0
    for steps in range(1, gn_steps + 1):
        rv = np.asarray(r(v))
        J = sparse_jacobian(r, v, reach, grid.shape)
        A = (J.T @ J).tocsc()
        g = J.T @ rv
        D = sp.diags(A.diagonal() + 1e-300)
        while lam < 1e12:
            delta = spla.spsolve((A + lam * D).tocsc(), -g)
            v_new = v + jnp.asarray(delta)
            loss_new = float(jnp.sum(r(v_new) ** 2))
            if loss_new < loss:
                break
            lam *= 10.0
        else:
            break  # no damping makes progress: a (local) minimum
        converged = loss - loss_new <= 1e-14 * loss
        v, loss, lam = v_new, loss_new, max(lam / 10.0, 1e-12)
        if converged or np.max(np.abs(delta)) < 1e-13 * max(1.0, float(jnp.max(jnp.abs(v)))):
            break
    u = np.asarray(v).reshape(grid.shape)
    rel = float(np.linalg.norm(u - u_true) / np.linalg.norm(u_true))
    return {"u": u, "rel_l2": rel, "loss_true": loss_true, "loss_floor": loss, "gn_steps": steps}


def matrix_free_floor(pde: PDE, grid: Grid, u_true: np.ndarray, u0: np.ndarray,
                      weights: LossWeights = LossWeights(), gn_steps: int = 20, inner_steps: int = 500,
                      inner_tol: float = 1e-8, start: np.ndarray | None = None) -> dict:
    """:func:`discretisation_floor` for residuals whose Jacobian is not sparse (spectral derivatives).

    Gauss-Newton on the same stacked residual, each step ``J d = -r`` solved
    in the least-squares sense by LSQR with Jacobian-vector and
    vector-Jacobian products (JAX), never forming ``J``; a halving line search
    keeps every step a decrease.  LSQR stops at the relative tolerance
    ``inner_tol`` (an inexact Newton method: the outer iteration then
    converges linearly, at a rate near ``inner_tol``).  Stops when a step
    gains less than 1e-14 of the loss, when the step is below 1e-12 of ``u``
    or the loss below 1e-24 of the truth's (a zero-residual minimum), when no
    step length decreases it (a minimum), or after ``gn_steps``.  Same result dict as :func:`discretisation_floor`, plus
    ``"inner_steps"`` (LSQR iterations, all steps).
    """
    from scipy.sparse.linalg import LinearOperator, lsqr

    u0 = jnp.asarray(u0, jnp.float64)
    r = _stacked_residual(pde, grid, u0, weights)
    rj = jax.jit(r)
    jv = jax.jit(lambda v, d: jax.jvp(r, (v,), (d,))[1])
    vj = jax.jit(lambda v, y: jax.vjp(r, v)[1](y)[0])
    loss_true = float(jnp.sum(rj(jnp.asarray(u_true, jnp.float64).reshape(-1)) ** 2))
    v = jnp.asarray(u_true if start is None else start, jnp.float64).reshape(-1)
    rv = rj(v)
    loss = float(jnp.sum(rv ** 2))
    steps = inner = 0
    for steps in range(1, gn_steps + 1):
        op = LinearOperator((rv.size, v.size), dtype=np.float64,
                            matvec=lambda d, v=v: np.asarray(jv(v, jnp.asarray(d.ravel()))),
                            rmatvec=lambda y, v=v: np.asarray(vj(v, jnp.asarray(y.ravel()))))
        sol = lsqr(op, -np.asarray(rv), atol=inner_tol, btol=inner_tol, iter_lim=inner_steps)
        delta, inner = jnp.asarray(sol[0]), inner + int(sol[2])
        s = 1.0
        while s > 1e-6:
            v_new = v + s * delta
            r_new = rj(v_new)
            loss_new = float(jnp.sum(r_new ** 2))
            if loss_new < loss:
                break
            s *= 0.5
        else:
            break  # no step length decreases the loss: a (local) minimum
        converged = (loss - loss_new <= 1e-14 * loss or loss_new <= 1e-24 * loss_true
                     or s * float(jnp.max(jnp.abs(delta))) <= 1e-12 * float(jnp.max(jnp.abs(v))))
        v, rv, loss = v_new, r_new, loss_new
        if converged:
            break
    u = np.asarray(v).reshape(grid.shape)
    rel = float(np.linalg.norm(u - u_true) / np.linalg.norm(u_true))
    return {"u": u, "rel_l2": rel, "loss_true": loss_true, "loss_floor": loss, "gn_steps": steps,
            "inner_steps": inner}
