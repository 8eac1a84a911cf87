r"""Data generator for PDEBench's 1D diffusion-sorption problem (our own solver).

Discretisation (PDEBench's ``sim_diff_sorp.py``): ``nx`` cells on (0, 1) with
centres ``x_i = (i + 1/2) dx`` and the semi-discrete system

.. math::
    \frac{du_i}{dt} = \frac{D}{R(u_i)} \frac{u_{i+1} - 2 u_i + u_{i-1}}{dx^2},
    \qquad u_{-1} = u_b = 1, \quad u_{n} = D \frac{u_{n-2} - u_{n-1}}{dx},

on PDEBench's 1024-cell grid.  On another grid the ghost values come from
:meth:`pihc.pdes.DiffusionSorption.ghosts` (the boundary values stay where
PDEBench's ghost cells put them, ``boundary_offset`` outside (0, 1)), so the
PDE object's residual and the generator share one closure.

with ``R`` from :meth:`pihc.pdes.DiffusionSorption.retardation` (the same
object, so the physical constants have one source).  The generator integrates
it exactly as PDEBench does (a hard clip of u at 0, ``smoothing = 0``).

The system is stiff (eigenvalues up to ``4 D / (R dx^2)`` ~ 700 at
``nx = 1024``): it is integrated by scipy's variable-order BDF with tight
tolerances and the analytic Jacobian.  Many samples are stacked into one
system whose Jacobian is block tridiagonal, so a sparse LU costs O(samples x
nx) and Python's per-step overhead is shared by the batch.

The scheme is first order at the boundary (PDEBench's ghost closure), so
smaller grids are made by solving at 1024 x 101 and restricting
(:meth:`pihc.grid.Grid.restrict`: cell averages in x, every k-th time).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..files import check_writable
from ..grid import Grid
from ..pdes.diffusion_sorption import DiffusionSorption, diffusion_sorption_grid

__all__ = ["initial_conditions", "solve_diffusion_sorption", "generate_diffusion_sorption",
           "IC_FAMILIES", "SOLVE_NX", "SOLVE_NT"]

IC_FAMILIES = ("pdebench", "smooth")
SOLVE_NX, SOLVE_NT = 1024, 101


def initial_conditions(n: int, nx: int, seed: int = 0, family: str = "pdebench") -> np.ndarray:
    """``n`` initial conditions on ``nx`` cells; sample ``i`` is seeded by ``seed + i``.

    ``"pdebench"``: a constant ``c0 ~ U(0, 0.2)`` drawn as PDEBench does
    (``np.random.seed(i); np.random.uniform(0, 0.2)``).  ``"smooth"``: a
    smooth positive profile in [0, 0.2]: ``c0 + a sum_k cos(k pi x + phi_k) / k^2``
    rescaled into [0, 0.2].
    """
    if family not in IC_FAMILIES:
        raise ValueError(f"unknown initial-condition family {family!r}; choose from {IC_FAMILIES}")
    x = (np.arange(nx) + 0.5) / nx
    out = np.empty((n, nx))
    for i in range(n):
        if family == "pdebench":
            np.random.seed(seed + i)  # PDEBench's own seeding, kept for comparability
            out[i] = np.random.uniform(0, 0.2)
        else:
            rng = np.random.default_rng(seed + i)
            k = np.arange(1, 5)
            prof = (rng.normal(size=4)[:, None] * np.cos(np.pi * k[:, None] * x + rng.uniform(0, 2 * np.pi, 4)[:, None])
                    / k[:, None] ** 2).sum(0)
            prof = (prof - prof.min()) / max(np.ptp(prof), 1e-12)
            lo = rng.uniform(0, 0.1)
            out[i] = lo + (0.2 - lo) * rng.uniform(0.2, 1.0) * prof
    return out


def _exact_pde(pde: DiffusionSorption) -> DiffusionSorption:
    # The data follow PDEBench's physics exactly: hard clip, no smoothing.
    return dataclasses.replace(pde, smoothing=0.0)


def solve_diffusion_sorption(u0: np.ndarray, pde: DiffusionSorption = DiffusionSorption(),
                             grid: Grid | None = None, *, rtol: float = 1e-6, atol: float = 1e-8,
                             method: str = "BDF") -> np.ndarray:
    """Integrate the finite-volume system for a batch of initial conditions.

    Args:
        u0: ``(n, nx)`` initial cell values.
        pde: the physical constants (``smoothing`` is ignored: hard clip).
        grid: output grid (t nodes from 0, x cells on (0, 1)); default 101 x nx over [0, 500].
        rtol, atol: integrator tolerances.
        method: scipy ``solve_ivp`` method (``"BDF"`` or ``"Radau"``).

    Returns:
        ``(n, nt, nx)`` float64 solution at the grid's times.
    """
    from scipy.integrate import solve_ivp
    from scipy.sparse import diags

    u0 = np.atleast_2d(np.asarray(u0, np.float64))
    n, nx = u0.shape
    grid = grid or diffusion_sorption_grid(SOLVE_NT, nx)
    if grid.shape[1] != nx:
        raise ValueError(f"u0 has {nx} cells but the grid has {grid.shape[1]}")
    p = _exact_pde(pde)
    D = float(p.diffusivity)
    dx = grid.spacing("x")
    coeff = (1 - p.porosity) / p.porosity * p.bulk_density * p.freundlich_k * p.freundlich_n
    nf, eps = float(p.freundlich_n), float(p.regularisation)

    def R_and_dR(u):
        base = np.maximum(u, 0.0) + eps
        R = 1.0 + coeff * base ** (nf - 1.0)
        dR = np.where(u > 0, coeff * (nf - 1.0) * base ** (nf - 2.0), 0.0)
        return R, dR

    # The ghost values are the PDE object's (DiffusionSorption.ghosts:
    # (1 - a) u_e + a v, a = 1 on PDEBench's grid); `a` also enters the Jacobian.
    a = float(p.ghost_weight(dx))

    def lap(u):  # u: (n, nx)
        left, right = p.ghosts(u, dx)
        out = np.empty_like(u)
        out[:, 1:-1] = u[:, 2:] - 2 * u[:, 1:-1] + u[:, :-2]
        out[:, 0] = u[:, 1] - 2 * u[:, 0] + left
        out[:, -1] = right - 2 * u[:, -1] + u[:, -2]
        return out / dx ** 2

    def f(t, y):
        u = y.reshape(n, nx)
        R, _ = R_and_dR(u)
        return (D / R * lap(u)).ravel()

    def jac(t, y):
        u = y.reshape(n, nx)
        R, dR = R_and_dR(u)
        L = lap(u)
        c = D / R / dx ** 2  # d/du_j of (D/R_i) lap_i, j = i +- 1
        main = -2.0 * c - D * dR / R ** 2 * L
        main[:, 0] += c[:, 0] * (1 - a)  # the left ghost depends on u_0
        main[:, -1] += c[:, -1] * (1 - a - a * D / dx)  # the right one on u_{n-1}
        lower = c.copy()  # entry (i, i-1)
        lower[:, -1] += c[:, -1] * a * D / dx  # ... and on u_{n-2}
        upper = c.copy()
        upper[:, -1] = 0.0  # no coupling across samples
        lower[:, 0] = 0.0
        return diags([lower.ravel()[1:], main.ravel(), upper.ravel()[:-1]], [-1, 0, 1], format="csc")

    t = grid.coords("t")
    # A trial step that overshoots (u far below 0, where R(u) ~ u^(n_f - 1) blows up) can hold
    # Inf/NaN before BDF rejects it and shrinks the step; numpy's warnings about that trial are
    # silenced here, and the accepted solution is checked below instead.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        sol = solve_ivp(f, (t[0], t[-1]), u0.ravel(), method=method, t_eval=t, rtol=rtol, atol=atol, jac=jac)
    if sol.status != 0:
        raise RuntimeError(f"the diffusion-sorption integration failed: {sol.message}")
    if not np.all(np.isfinite(sol.y)):
        raise RuntimeError("the diffusion-sorption integration produced NaN or Inf; tighten rtol/atol")
    return sol.y.T.reshape(len(t), n, nx).transpose(1, 0, 2)


def solve_as_generated(u0: np.ndarray, pde: DiffusionSorption, grid: Grid, **kw) -> np.ndarray:
    """Solve as :func:`generate_diffusion_sorption` does: at 1024 cells (u0 repeated
    onto them) and 101 times where ``grid`` divides those, then restrict to ``grid``."""
    nt, nx = grid.shape
    fine_nx = SOLVE_NX if SOLVE_NX % nx == 0 else nx
    fine_nt = SOLVE_NT if (SOLVE_NT - 1) % (nt - 1) == 0 else nt
    fine = diffusion_sorption_grid(fine_nt, fine_nx, grid.axes[0].hi)
    u = solve_diffusion_sorption(np.repeat(np.atleast_2d(u0), fine_nx // nx, axis=-1), pde, fine, **kw)
    factors = fine.factors_to(grid)
    return np.stack([fine.restrict(v, factors) for v in u])


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the worker gets SIGKILL when its parent dies, even by SIGKILL (Linux's
    ``PR_SET_PDEATHSIG``; elsewhere a no-op), so no worker outlives a killed generator."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


def _solve_batch(args):
    """One batch, restricted to the target grid (a module-level function, so it pickles)."""
    u0, pde, fine, target, rtol, atol = args
    u = solve_diffusion_sorption(u0, pde, fine, rtol=rtol, atol=atol)
    factors = fine.factors_to(target)
    return np.stack([fine.restrict(v, factors) for v in u])


def check_generate_args(*, samples, nx, nt, seed, ic, batch=1) -> None:
    """Raise ValueError naming the first bad argument of :func:`generate_diffusion_sorption` (no compute)."""
    for name, v, lo in (("samples", samples, 1), ("nx", nx, 2), ("nt", nt, 2), ("batch", batch, 1),
                        ("seed", seed, 0)):
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    if ic not in IC_FAMILIES:
        raise ValueError(f"unknown initial-condition family {ic!r}; choose from {IC_FAMILIES}")


def generate_diffusion_sorption(path, *, samples: int, nx: int = SOLVE_NX, nt: int = SOLVE_NT,
                                seed: int = 0, ic: str = "pdebench", batch: int = 4,
                                pde: DiffusionSorption = DiffusionSorption(), t_max: float = 500.0,
                                progress: bool = True, rtol: float = 1e-6, atol: float = 1e-8,
                                workers: int | None = None, callback=None):
    """Generate ``samples`` trajectories and write them (atomically) in PDEBench's layout.

    The solve runs at 1024 cells (or ``nx`` if 1024 is not a multiple of it)
    and 101 times (or ``nt``), and is restricted to ``nt x nx``.  Batches of
    ``batch`` samples share one stiff solve (4 is fastest here: larger
    batches force every sample onto the smallest step of any); ``workers``
    processes solve batches in parallel (default: one per core when there
    are at least 8 batches).  The defaults (rtol 1e-6) agree with a solve
    at rtol 1e-11 to a relative L2 of ~3e-7 (``benchmarks/generator_speed.py``).

    Returns:
        The path written.
    """
    from .hdf5 import write_pdebench

    check_generate_args(samples=samples, nx=nx, nt=nt, seed=seed, ic=ic, batch=batch)
    check_writable(path, "the dataset file")  # before the solves, not after
    target = diffusion_sorption_grid(nt, nx, t_max)
    fine_nx = SOLVE_NX if SOLVE_NX % nx == 0 else nx
    fine_nt = SOLVE_NT if (SOLVE_NT - 1) % (nt - 1) == 0 else nt
    fine = diffusion_sorption_grid(fine_nt, fine_nx, t_max)
    config = {"problem": "diffusion-sorption", "samples": samples, "nx": nx, "nt": nt, "t_max": t_max,
              "seed": seed, "ic": ic, "solver": {"method": "BDF", "rtol": rtol, "atol": atol,
                                                  "nx": fine_nx, "nt": fine_nt,
                                                  "boundary_offset": pde.boundary_offset},
              "pde": physical_constants(pde)}
    starts = list(range(0, samples, batch))
    jobs = [(initial_conditions(min(batch, samples - s), fine_nx, seed + s, ic), pde, fine, target, rtol, atol)
            for s in starts]
    if workers is None:
        workers = (os.cpu_count() or 1) if len(jobs) >= 8 else 1

    def batches():
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=samples, desc="generate diffusion-sorption", unit="sample")
        pool, finished = None, False
        try:
            if workers > 1:
                import concurrent.futures
                import multiprocessing
                import warnings

                # fork: workers run numpy/scipy only (never JAX), so forking a
                # process that holds JAX's threads is safe here, and unlike
                # spawn it needs no `if __name__ == "__main__"` in the caller.
                pool = concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork"),
                    initializer=_die_with_parent, initargs=(os.getpid(),))
                others = set(multiprocessing.active_children())
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*fork.*", category=RuntimeWarning)
                    results = pool.map(_solve_batch, jobs)
            else:
                results = map(_solve_batch, jobs)
            done = 0
            for u in results:
                done += len(u)
                if bar is not None:
                    bar.update(len(u))
                if callback is not None:
                    callback(done)
                yield u
            finished = True
        finally:
            if pool is not None:
                if not finished:  # an error or an interrupt: the workers' batches are of no use now
                    for p in set(multiprocessing.active_children()) - others:
                        p.kill()
                pool.shutdown(cancel_futures=True)
            if bar is not None:
                bar.close()

    return write_pdebench(path, batches(), target, config, samples, pde=pde)


def physical_constants(pde: DiffusionSorption) -> dict:
    """The physical constants of ``pde`` as a JSON-able dict (what data files record)."""
    names = ("diffusivity", "porosity", "bulk_density", "freundlich_k", "freundlich_n",
             "boundary_value", "regularisation")
    return {k: float(getattr(pde, k)) for k in names}
