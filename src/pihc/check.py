"""Numerical checks of a PDE implementation against the contract of :class:`~pihc.pdes.PDE`.

:func:`check_pde` evaluates a PDE on random fields and names every part of
the contract it breaks: shapes, affinity of the terms and of the rows (the
constraint layer relies on ``f(B w + o) = sum_i L(B_i) w_i + f(o)``), a
residual that is pointwise, row points inside the grid, and, given an exact
solution, a residual and rows that vanish on it (up to the discretisation
error, which must shrink when the grid is refined).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .experts import _curvature_groups
from .grid import Axis, Grid
from .linearise import RowMap
from .pdes.base import PDE

__all__ = ["PDEContractError", "check_pde"]


class PDEContractError(ValueError):
    """A PDE breaks the contract of :class:`~pihc.pdes.PDE`; the message lists every failure."""


def _refined(grid: Grid) -> Grid:
    """The grid with twice the resolution on every axis (same intervals)."""
    axes = [Axis(a.name, 2 * a.n - 1 if a.kind == "nodes" else 2 * a.n, a.lo, a.hi, a.kind) for a in grid.axes]
    return Grid(tuple(axes))


def _affine_error(f: Callable, shape, key, per_last_axis: bool = False):
    """max |f(a u + b v) - f(0) - a (f(u) - f(0)) - b (f(v) - f(0))| / scale over random u, v
    (one number per entry of the last axis with ``per_last_axis``: per term)."""
    ku, kv = jax.random.split(key)
    u, v = jax.random.normal(ku, shape, jnp.float64), jax.random.normal(kv, shape, jnp.float64)
    a, b = 0.7, -1.3
    f = jax.jit(f)
    f0, fu, fv = f(jnp.zeros(shape, jnp.float64)), f(u), f(v)
    gap = np.asarray(jnp.abs(f(a * u + b * v) - f0 - a * (fu - f0) - b * (fv - f0)))
    size = np.maximum(np.asarray(jnp.abs(fu - f0)), np.asarray(jnp.abs(fv - f0)))
    if per_last_axis:
        axes = tuple(range(gap.ndim - 1))
        return gap.max(axes, initial=0.0) / np.maximum(size.max(axes, initial=0.0), 1e-300)
    return float(gap.max(initial=0.0)) / max(float(size.max(initial=0.0)), 1e-300)


def _points_ok(points, grid: Grid, what: str, n_rows: int, failures: list[str]) -> None:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != grid.ndim or not np.issubdtype(p.dtype, np.integer):
        failures.append(f"{what}_points(grid) must be integers of shape (n_rows, {grid.ndim}), got"
                        f" {p.dtype} {p.shape}")
        return
    if len(p) != n_rows:
        failures.append(f"{what}_points(grid) has {len(p)} points for {n_rows} {what}s: one point per row")
    if len(p) and (np.any(p < 0) or np.any(p >= np.asarray(grid.shape))):
        failures.append(f"{what}_points(grid) has points outside the grid {grid.shape}")


def check_pde(pde: PDE, grid: Grid, exact=None, *, seed: int = 0, tol: float = 1e-8,
              raise_on_failure: bool = True) -> dict:
    """Test ``pde`` on ``grid`` numerically; raise :class:`PDEContractError` naming what is wrong.

    Args:
        pde: the PDE.
        grid: a grid it should live on (``pde.check_grid`` must accept it).
        exact: optional exact solution: a function ``grid -> u`` (shape
            ``grid.shape``), or an array on ``grid``.  The residual on
            ``pde.residual_domain`` and the rows (with ``u0 = u[0]``) must be
            small on it.  Given a function, it is also evaluated on the grid
            refined twice per axis: the residual and rows must shrink there
            (their observed order is reported), so a discretisation error is
            told apart from a wrong PDE.
        seed: for the random fields of the affinity checks.
        tol: relative tolerance of the affinity and pointwise checks (float64).
        raise_on_failure: False returns the report with its ``failures`` instead.

    Returns:
        A report: ``failures`` (empty when the PDE passes), the affinity errors
        of the terms and rows, the number of terms, initial and boundary rows,
        and with ``exact`` the RMS residual and rows on the grid (and refined,
        with their orders).
    """
    failures: list[str] = []
    report: dict = {"failures": failures}
    try:
        pde.check_grid(grid)
    except ValueError as err:
        failures.append(f"check_grid refuses the grid: {err}")
        return _finish(report, raise_on_failure)
    key = jax.random.key(seed)
    names = pde.term_names
    u = jax.random.normal(key, grid.shape, jnp.float64)
    u0 = jax.random.normal(jax.random.fold_in(key, 1), grid.shape[1:], jnp.float64)
    terms = pde.terms(u, grid)
    report["n_terms"] = len(names)
    if tuple(terms.shape) != grid.shape + (len(names),):
        failures.append(f"terms(u, grid) has shape {tuple(terms.shape)}; expected grid.shape + (len(term_names),)"
                        f" = {grid.shape + (len(names),)}")
        return _finish(report, raise_on_failure)
    # Affinity, term by term: the constraint layer evaluates the linear part once per basis column.
    per_term = _affine_error(lambda v: pde.terms(v, grid), grid.shape, jax.random.fold_in(key, 2), True)
    errs = {name: float(e) for name, e in zip(names, per_term)}
    for name in names:
        if not errs[name] <= tol:
            failures.append(f"term {name!r} is not affine in u (relative error {errs[name]:.2e}); a product of u"
                            " with itself (u u_x, u^3) belongs in residual(), with u and u_x as separate terms")
    report["terms_affine_error"] = errs
    # Pointwise residual: F at a point reads only that point's terms, for any leading shape.
    r = pde.residual(terms)
    if tuple(jnp.shape(r)) != grid.shape:
        failures.append(f"residual(terms) has shape {tuple(jnp.shape(r))}; expected the grid's {grid.shape}")
    else:
        flat = terms.reshape(-1, len(names))
        perm = np.random.default_rng(seed).permutation(flat.shape[0])
        rp = pde.residual(flat[perm])
        if tuple(jnp.shape(rp)) != (flat.shape[0],):
            failures.append(f"residual on a flat (points, n_terms) array has shape {tuple(jnp.shape(rp))};"
                            " it must accept any leading shape (the layer evaluates it at sampled points)")
        else:
            d = float(jnp.max(jnp.abs(rp - r.reshape(-1)[perm]))) / max(float(jnp.max(jnp.abs(r))), 1e-300)
            report["residual_pointwise_error"] = d
            if not d <= tol:
                failures.append(f"residual is not pointwise (relative change {d:.2e} when the points are shuffled):"
                                " derivatives belong in terms(), the residual only combines a point's terms")
    if "residual_pointwise_error" in report:  # F evaluates at single points: its second derivatives
        _check_curvature_pairs(pde, terms.reshape(-1, len(names)), tol, report, failures)
    mask = np.asarray(pde.residual_domain(grid))
    if mask.shape != grid.shape or mask.dtype != bool:
        failures.append(f"residual_domain(grid) must be a boolean mask of shape {grid.shape}, got {mask.dtype}"
                        f" {mask.shape}")
    elif not mask.any():
        failures.append("residual_domain(grid) is empty: the PDE applies nowhere")
    # Rows: shapes, affinity in u, their points.
    ic = pde.initial_rows(u, u0, grid)
    bc = pde.boundary_rows(u, grid)
    for what, rows in (("initial_row", ic), ("boundary_row", bc)):
        if jnp.ndim(rows) != 1:
            failures.append(f"{what}s must be a flat vector (n_rows,), got shape {tuple(jnp.shape(rows))}")
    report["n_initial_rows"], report["n_boundary_rows"] = int(jnp.size(ic)), int(jnp.size(bc))
    _points_ok(pde.initial_row_points(grid), grid, "initial_row", int(jnp.size(ic)), failures)
    _points_ok(pde.boundary_row_points(grid), grid, "boundary_row", int(jnp.size(bc)), failures)
    row_map = RowMap(pde, u0, grid)
    rows_err = _affine_error(lambda v: row_map(v)[1], grid.shape, jax.random.fold_in(key, 3))
    report["rows_affine_error"] = rows_err
    if not rows_err <= tol:
        failures.append(f"the initial/boundary rows are not affine in u (relative error {rows_err:.2e})")
    if int(jnp.size(ic)):
        v = u.at[0].set(u0)
        ic_at_u0 = float(jnp.max(jnp.abs(pde.initial_rows(v, u0, grid))))
        if not ic_at_u0 <= tol * max(float(jnp.max(jnp.abs(u0))), 1.0):
            failures.append(f"initial_rows do not vanish when u(t_0) = u0 (max |row| {ic_at_u0:.2e})")
    if exact is not None:
        _check_exact(pde, grid, exact, report, failures)
    return _finish(report, raise_on_failure)


def _check_curvature_pairs(pde: PDE, terms, tol: float, report: dict, failures: list[str]) -> None:
    """A declared ``curvature_pairs`` must name the terms and hold every non-zero ``d^2 F / dT_a dT_b``."""
    pairs = pde.curvature_pairs
    if pairs is None:
        return
    try:
        groups = _curvature_groups(pde)  # the layer's reading of the declaration
    except ValueError as err:
        failures.append(str(err))
        return
    names = pde.term_names
    declared = np.zeros((len(names), len(names)), bool)
    for a, bs in groups:
        for b, _ in bs:
            declared[a, b] = declared[b, a] = True
    T = terms[:: max(1, terms.shape[0] // 256)]  # a few hundred random points
    d2 = np.asarray(jax.vmap(jax.hessian(pde.residual))(T))
    d1 = np.asarray(jax.vmap(jax.grad(pde.residual))(T))
    scale = max(float(np.abs(d1).max(initial=0.0)), float(np.abs(d2).max(initial=0.0)), 1e-300)
    undeclared = np.where(declared, 0.0, np.abs(d2)).max(axis=0, initial=0.0) / scale
    report["curvature_undeclared_error"] = float(undeclared.max(initial=0.0))
    missing = [(names[a], names[b]) for a, b in zip(*np.nonzero(undeclared > tol)) if a <= b]
    if missing:
        failures.append(f"curvature_pairs {tuple(pairs)} leaves out {missing}, whose second derivative of the"
                        " residual is not zero: add them (or return None)")


def _rms_on(pde: PDE, grid: Grid, u) -> tuple[float, float, float]:
    u = jnp.asarray(u, jnp.float64)
    mask = np.asarray(pde.residual_domain(grid))
    r = pde.residual(pde.terms(u, grid))
    res = float(jnp.sqrt(jnp.sum(jnp.where(mask, r, 0.0) ** 2) / max(int(mask.sum()), 1)))
    ic, bc = pde.initial_rows(u, u[0], grid), pde.boundary_rows(u, grid)
    rms = lambda x: float(jnp.sqrt(jnp.mean(x**2))) if jnp.size(x) else 0.0  # noqa: E731
    return res, rms(ic), rms(bc)


def _check_exact(pde: PDE, grid: Grid, exact, report: dict, failures: list[str]) -> None:
    u = exact(grid) if callable(exact) else exact
    if tuple(np.shape(u)) != grid.shape:
        failures.append(f"the exact solution has shape {tuple(np.shape(u))}; the grid is {grid.shape}")
        return
    res, ic, bc = _rms_on(pde, grid, u)
    scale = float(np.sqrt(np.mean(np.asarray(pde.terms(jnp.asarray(u, jnp.float64), grid)) ** 2)))
    report["exact"] = {"residual_rms": res, "initial_rows_rms": ic, "boundary_rows_rms": bc, "terms_rms": scale}
    if not callable(exact):
        if res > 1e-2 * scale:
            failures.append(f"the residual on the exact solution is {res:.2e} (RMS), {res / scale:.1%} of the"
                            " terms' size: a wrong sign or constant? (give exact as a function of the grid to"
                            " check that it shrinks with resolution)")
        return
    fine = _refined(grid)
    res_f, ic_f, bc_f = _rms_on(pde, fine, exact(fine))
    order = lambda a, b: float(np.log2(a / b)) if a > 0 and b > 0 else float("inf")  # noqa: E731
    report["exact"].update({"refined_grid": list(fine.shape), "residual_rms_refined": res_f,
                            "boundary_rows_rms_refined": bc_f, "residual_order": order(res, res_f),
                            "boundary_rows_order": order(bc, bc_f)})
    small = 1e-10 * max(scale, 1.0)
    if res > small and not res_f < 0.8 * res:
        failures.append(f"the residual on the exact solution does not shrink when the grid is refined ({res:.2e} ->"
                        f" {res_f:.2e} RMS): the residual or a term is wrong, not just under-resolved")
    if bc > small and not bc_f < 0.8 * bc:
        failures.append(f"the boundary rows on the exact solution do not shrink when the grid is refined ({bc:.2e}"
                        f" -> {bc_f:.2e} RMS)")
    if ic > small:
        failures.append(f"the initial rows do not vanish on the exact solution with u0 = u(t_0) (RMS {ic:.2e})")


def _finish(report: dict, raise_on_failure: bool) -> dict:
    if report["failures"] and raise_on_failure:
        raise PDEContractError("the PDE breaks its contract: " + "; ".join(report["failures"]))
    return report
