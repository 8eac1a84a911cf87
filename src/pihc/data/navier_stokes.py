r"""Data generator for 2D Navier-Stokes (vorticity form) on the periodic unit square.

Initial vorticity (:func:`initial_vorticity`): a centred Gaussian process with
the periodic kernel

.. math::  k(\mathbf d) = \prod_{i \in \{x, y\}} \exp\!\Big(-\frac{\sin^2(\pi d_i)}{2 l^2}\Big),
           \qquad l = 0.8,

(unit variance), sampled on the grid and with its spatial mean removed.  On
the periodic grid the covariance matrix is circulant (block circulant with
circulant blocks), diagonalised by the 2D DFT with eigenvalues ``lam =
fft2(k(grid))``; ``w = ifft2(sqrt(lam) fft2(z))`` with white noise ``z`` has
exactly that covariance (``C^{1/2} = F^{-1} diag(sqrt lam) F`` is real and
symmetric because ``lam`` is real and even).  Removing the mean zeroes the
mode ``(0, 0)``; the covariance becomes ``k(d) - mean(k)``.  Sample ``i`` uses
the seed ``seed + i`` alone, so a file's samples do not depend on batching.

Solver (:func:`solve_navier_stokes`): Fourier pseudo-spectral in space,

.. math::  \partial_t \hat w = -\nu |k|^2 \hat w - P\,\widehat{(u w_x + v w_y)},

with the velocity from the stream function (:func:`pihc.pdes.navier_stokes.spectral_operators`,
the PDE's own multipliers) and ``P`` the 2/3 rule: modes with ``|m_x| >=
n_x / 3`` or ``|m_y| >= n_y / 3`` are zeroed in the state and in the
nonlinear term, so the quadratic product is computed without aliasing onto
the kept modes.  Time: the integrating-factor fourth-order Runge-Kutta
scheme (the viscous term exactly, ``exp(-nu |k|^2 dt)``; the advection by
classical RK4), ``substeps`` equal steps between output times, ``lax.scan``
under ``jit`` and ``vmap`` over samples, in float64.

``solve_nx`` solves on a finer grid: the initial condition, sampled on the
output grid, is extended by zero padding of its spectrum (band-limited
interpolation), solved there, and sampled back at the output grid's points
(a subset of the fine grid's).  The accuracy of the defaults is measured by
``benchmarks/ns_generator.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..files import check_writable
from ..pdes.navier_stokes import NavierStokes2D, navier_stokes_grid

__all__ = ["kernel_eigenvalues", "initial_vorticity", "solve_navier_stokes", "generate_navier_stokes",
           "default_solve_nx", "default_substeps", "spectral_resample", "LENGTH_SCALE", "MIN_SOLVE_NX", "DT_AT_64"]

LENGTH_SCALE = 0.8
MIN_SOLVE_NX = 64  # coarser output grids are solved at the smallest multiple of theirs >= this
# The default time step's bound on a 64-point solve grid, scaled by 64 / n for
# n points (an advective CFL bound: RK4 is stable for |u| k_max dt < 2.8; with
# the 2/3 rule k_max = 2 pi n / 3, and |u| stays near 0.2-0.3 for these data).
DT_AT_64 = 0.04


def kernel_eigenvalues(nx: int, ny: int, length_scale: float = LENGTH_SCALE) -> np.ndarray:
    """Eigenvalues ``(nx, ny)`` of the kernel's covariance matrix on the ``nx x ny`` periodic grid.

    They are the 2D DFT of the kernel's first row ``k(i / nx, j / ny)``, a
    product of 1D factors.  Each factor is computed from the kernel's Fourier
    series rather than by an FFT: with ``a = 1 / (4 l^2)``,
    ``exp(-sin^2(pi d) / (2 l^2)) = sum_m e^{-a} I_m(a) e^{2 pi i m d}``, so the
    DFT of its ``n`` samples is ``n sum_j e^{-a} I_{m + j n}(a)`` (the aliased
    coefficients).  The coefficients fall faster than geometrically; an FFT
    would put every eigenvalue below its round-off (~1e-16 n) at that floor,
    and their square roots would add white noise of amplitude ~1e-7 to every
    sample.
    """
    from scipy.special import ive  # e^{-a} I_m(a), accurate far below 1e-300 relative to 1

    a = 1.0 / (4.0 * length_scale**2)

    def factor(n):
        m = np.fft.fftfreq(n, 1.0 / n)
        return n * sum(ive(np.abs(m + j * n), a) for j in range(-3, 4))

    return factor(nx)[:, None] * factor(ny)[None, :]


def initial_vorticity(n: int, nx: int, ny: int | None = None, seed: int = 0,
                      length_scale: float = LENGTH_SCALE) -> np.ndarray:
    """``n`` initial vorticities ``(n, nx, ny)``: the periodic-kernel Gaussian process, mean removed."""
    ny = nx if ny is None else ny
    root = np.sqrt(kernel_eigenvalues(nx, ny, length_scale))
    root[0, 0] = 0.0  # the spatial mean removed
    out = np.empty((n, nx, ny))
    for i in range(n):
        z = np.random.default_rng(seed + i).standard_normal((nx, ny))
        out[i] = np.real(np.fft.ifft2(root * np.fft.fft2(z)))
    return out


def default_solve_nx(nx: int) -> int:
    """The smallest multiple of ``nx`` that is at least :data:`MIN_SOLVE_NX`."""
    return nx * max(1, math.ceil(MIN_SOLVE_NX / nx))


def default_substeps(nt: int, t_end: float, solve_n: int = 64) -> int:
    """Time steps per output interval: the fewest with ``dt <= DT_AT_64 * 64 / solve_n``.

    ``solve_n``: the most points per unit length of the solve grid.
    """
    max_dt = DT_AT_64 * 64.0 / solve_n
    return max(1, math.ceil((t_end / (nt - 1)) / max_dt - 1e-9))


def spectral_resample(w: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Band-limited interpolation of periodic fields ``(..., mx, my)`` onto ``nx >= mx`` by ``ny >= my`` points.

    Zero padding of the spectrum.  The Nyquist mode of an even input is split
    evenly between ``+-m/2`` so that the result is real and equals the input
    at the input's points (a trigonometric interpolant).
    """
    w = np.asarray(w, np.float64)
    return _pad_axis(_pad_axis(w, nx, w.ndim - 2), ny, w.ndim - 1)


def _pad_axis(w: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = w.shape[axis]
    if n == m:
        return w
    if n < m:
        raise ValueError(f"spectral_resample pads only: {m} points cannot become {n}")
    wh = np.moveaxis(np.fft.fft(w, axis=axis), axis, -1)
    out = np.zeros(wh.shape[:-1] + (n,), complex)
    h = (m + 1) // 2  # the modes 0 .. h-1 (and m/2, the Nyquist mode, if m is even)
    out[..., :h] = wh[..., :h]
    if m % 2:
        out[..., n - (m - h):] = wh[..., h:]
    else:
        out[..., n - h + 1:] = wh[..., h + 1:]
        out[..., h] = 0.5 * wh[..., h]
        out[..., n - h] = 0.5 * wh[..., h]
    return np.moveaxis(np.real(np.fft.ifft(out, axis=-1)) * (n / m), -1, axis)


def _solver(nx: int, ny: int, viscosity: float, dt: float, substeps: int, nt: int):
    """The jitted, vmapped map ``w0 (b, nx, ny) -> w (b, nt, nx, ny)`` (cached per setting)."""
    return _build_solver(nx, ny, float(viscosity), float(dt), int(substeps), int(nt))


@functools.lru_cache(maxsize=16)
def _build_solver(nx, ny, viscosity, dt, substeps, nt):
    import jax
    import jax.numpy as jnp

    from ..pdes.navier_stokes import spectral_operators

    ops = spectral_operators(nx, ny, 1.0, 1.0, jnp.float64)
    mx = np.abs(np.fft.fftfreq(nx, 1.0 / nx))[:, None]
    my = np.fft.rfftfreq(ny, 1.0 / ny)[None, :]
    keep = jnp.asarray(((3 * mx < nx) & (3 * my < ny)).astype(np.float64))  # the 2/3 rule
    k2 = -np.real(np.asarray(ops["lap"]))
    half = jnp.asarray(np.exp(-viscosity * k2 * dt / 2.0))  # the integrating factor over dt/2
    keep_c = jax.lax.complex(keep, jnp.zeros_like(keep))
    half_c = jax.lax.complex(half, jnp.zeros_like(half))

    def irfft(a):
        return jnp.fft.irfft2(a, s=(nx, ny))

    def nonlinear(wh):
        u, v = irfft(ops["u"] * wh), irfft(ops["v"] * wh)
        wx, wy = irfft(ops["dx"] * wh), irfft(ops["dy"] * wh)
        return -keep_c * jnp.fft.rfft2(u * wx + v * wy)

    def step(wh, _):
        a = dt * nonlinear(wh)
        b = dt * nonlinear(half_c * (wh + 0.5 * a))
        c = dt * nonlinear(half_c * wh + 0.5 * b)
        e2 = half_c * half_c
        d = dt * nonlinear(e2 * wh + half_c * c)
        return e2 * wh + (e2 * a + 2.0 * half_c * (b + c) + d) / 6.0, None

    def interval(wh, _):
        wh, _ = jax.lax.scan(step, wh, None, length=substeps)
        return wh, irfft(wh)

    def one(w0):
        wh = keep_c * jnp.fft.rfft2(w0)
        _, ws = jax.lax.scan(interval, wh, None, length=nt - 1)
        return jnp.concatenate([irfft(wh)[None], ws])

    return jax.jit(jax.vmap(one))


def solve_navier_stokes(w0: np.ndarray, pde: NavierStokes2D = NavierStokes2D(), *, nt: int = 64,
                        t_end: float = 5.0, solve_nx: int | None = None, substeps: int | None = None
                        ) -> np.ndarray:
    """Solve from initial vorticities ``w0`` ``(n, nx, ny)``; returns ``(n, nt, nx, ny)`` float64.

    Args:
        w0: initial vorticity on the ``nx x ny`` output grid (points ``i / n``).
        pde: the viscosity (no forcing).
        nt: output times ``t_k = k t_end / (nt - 1)``, t = 0 included.
        t_end: final time.
        solve_nx: points per axis of the solve (a multiple of ``nx`` and ``ny``,
            scaled for ``ny`` by ``ny / nx``); default :func:`default_solve_nx`.
        substeps: RK4 steps per output interval; default :func:`default_substeps`.
    """
    from ..least_squares import require_x64

    require_x64()
    if pde.forcing is not None:
        raise ValueError("the generator solves the unforced problem; give a NavierStokes2D without forcing")
    w0 = np.asarray(w0, np.float64)
    if w0.ndim != 3:
        raise ValueError(f"w0 must have shape (samples, nx, ny), got {w0.shape}")
    _, nx, ny = w0.shape
    snx = default_solve_nx(nx) if solve_nx is None else int(solve_nx)
    if snx % nx or snx < nx:
        raise ValueError(f"solve_nx {snx} must be a multiple of nx {nx}")
    f = snx // nx
    sny = ny * f
    substeps = default_substeps(nt, t_end, max(snx, sny)) if substeps is None else int(substeps)
    dt = t_end / (nt - 1) / substeps
    fine = spectral_resample(w0, snx, sny) if f > 1 else w0
    import jax.numpy as jnp

    out = np.asarray(_solver(snx, sny, float(pde.viscosity), dt, substeps, nt)(jnp.asarray(fine)))
    return out[..., ::f, ::f]


def generate_navier_stokes(path, *, samples: int, nx: int = 64, ny: int | None = None, nt: int = 64,
                           t_end: float = 5.0, viscosity: float = 1e-4, seed: int = 0,
                           solve_nx: int | None = None, substeps: int | None = None, batch: int = 16,
                           dtype: str = "float32", progress: bool = True, callback=None):
    """Generate ``samples`` trajectories and write them (atomically) in PDEBench's per-sample layout.

    ``NNNN/data`` has shape ``(nt, nx, ny, 1)``; ``NNNN/grid/{t,x,y}`` the
    coordinates; the root attributes record the resolved settings, the PDE
    class and its constants (:func:`pihc.data.hdf5.write_pdebench`).
    Batches of ``batch`` samples are solved together (one vmapped call).
    ``dtype``: the stored precision (``float32``, as PDEBench; the solve is
    float64 either way).

    Returns:
        The path written.
    """
    from .hdf5 import write_pdebench

    ny = nx if ny is None else ny
    check_generate_args(samples=samples, nx=nx, ny=ny, nt=nt, t_end=t_end, viscosity=viscosity, seed=seed,
                        solve_nx=solve_nx, substeps=substeps, batch=batch, dtype=dtype)
    check_writable(path, "the dataset file")  # before the solves, not after
    pde = NavierStokes2D(viscosity=viscosity)
    grid = navier_stokes_grid(nt, nx, ny, t_end)
    snx = default_solve_nx(nx) if solve_nx is None else solve_nx
    steps = default_substeps(nt, t_end, max(snx, ny * (snx // nx))) if substeps is None else substeps
    config = {"problem": "navier-stokes", "samples": samples, "nx": nx, "ny": ny, "nt": nt, "t_end": t_end,
              "seed": seed, "ic": {"kernel": "periodic", "length_scale": LENGTH_SCALE, "mean": "removed"},
              "solver": {"method": "pseudo-spectral, 2/3 dealiasing, integrating-factor RK4",
                         "nx": snx, "ny": ny * (snx // nx), "substeps": steps, "dt": t_end / (nt - 1) / steps},
              "pde": {"viscosity": float(viscosity)}}

    def batches():
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=samples, desc="generate navier-stokes", unit="sample")
        try:
            for s in range(0, samples, batch):
                w0 = initial_vorticity(min(batch, samples - s), nx, ny, seed + s)
                u = solve_navier_stokes(w0, pde, nt=nt, t_end=t_end, solve_nx=snx, substeps=steps)
                if not np.all(np.isfinite(u)):
                    bad = [f"{s + i:04d}" for i in range(len(u)) if not np.all(np.isfinite(u[i]))]
                    raise FloatingPointError(f"the solve of sample(s) {', '.join(bad)} is not finite; use a"
                                             " smaller time step (--substeps) or a finer grid (--solve-nx)")
                if bar is not None:
                    bar.update(len(u))
                if callback is not None:
                    callback(s + len(u))
                yield u
        finally:
            if bar is not None:
                bar.close()

    return write_pdebench(path, batches(), grid, config, samples, pde=pde, dtype=dtype)


def check_generate_args(*, samples, nx, ny, nt, t_end, viscosity, seed, solve_nx=None, substeps=None,
                        batch=1, dtype="float32") -> None:
    """Raise ValueError naming the first bad argument of :func:`generate_navier_stokes` (no compute;
    ``t_end`` or ``viscosity`` None: not checked)."""
    for name, v, lo in (("samples", samples, 1), ("nx", nx, 4), ("ny", ny, 4), ("nt", nt, 2),
                        ("batch", batch, 1), ("seed", seed, 0)):
        if int(v) != v or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v}")
    if t_end is not None and not (math.isfinite(t_end) and t_end > 0):
        raise ValueError(f"t_end must be a positive number, got {t_end}")
    if viscosity is not None and not (math.isfinite(viscosity) and viscosity > 0):
        raise ValueError(f"viscosity must be a positive number, got {viscosity}")
    if solve_nx is not None and (int(solve_nx) != solve_nx or solve_nx < nx or solve_nx % nx):
        raise ValueError(f"solve_nx must be a multiple of nx = {nx} (the output points are a subset of the"
                         f" solve's), got {solve_nx}")
    if substeps is not None and (int(substeps) != substeps or substeps < 1):
        raise ValueError(f"substeps must be an integer >= 1, got {substeps}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
