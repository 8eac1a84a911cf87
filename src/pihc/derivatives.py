"""Derivative operators on uniform grids.

All operators are linear in ``u``, act along one axis of an array of any
rank, and are written with slices so that they are cheap under ``vmap`` and
differentiable.

* :func:`diff1` -- first derivative, finite differences of order 2 or 4
  (central inside, one-sided of the same order at non-periodic ends).
* :func:`diff1_backward` -- first derivative by backward differentiation
  formulas (BDF1/BDF2): each value reads only earlier points, so a residual
  built on it along time is causal (an implicit time-stepping scheme).
* :func:`diff2` -- second derivative, compact 3-point stencil inside
  (order 2), one-sided 4-point stencil at non-periodic ends (order 2).
* :func:`diff2_ghost` -- the compact stencil closed by given ghost values
  beyond each end (the finite-volume way of imposing boundary conditions).
* :func:`spectral_diff` -- derivatives of any order on a periodic axis via
  the FFT (exact for trigonometric polynomials resolved by the grid).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .grid import Axis

# One-sided first-derivative weights at the first points (reversed and
# negated at the last points).  Rows: the point, columns: u_0, u_1, ...
_ONE_SIDED_D1 = {
    2: ((-3.0, 4.0, -1.0),),
    4: ((-25.0, 48.0, -36.0, 16.0, -3.0), (-3.0, -10.0, 18.0, -6.0, 1.0)),
}
_ONE_SIDED_D1_SCALE = {2: 2.0, 4: 12.0}


def _take(u, axis, start, stop=None):
    n = u.shape[axis]
    stop = n if stop is None else stop
    idx = [slice(None)] * u.ndim
    idx[axis] = slice(start, stop if stop >= 0 else n + stop)
    return u[tuple(idx)]


def _weighted(u, axis, weights, offset):
    """sum_j weights[j] * u[offset + j] along ``axis`` (a 1-slice result)."""
    acc = 0.0
    for j, wj in enumerate(weights):
        acc = acc + wj * _take(u, axis, offset + j, offset + j + 1)
    return acc


def diff1(u: Float[Array, "..."], axis: int, h: float, *, periodic: bool = False,
          order: int = 2) -> Float[Array, "..."]:
    """First derivative along ``axis`` with spacing ``h``; error O(h^order).

    Inside: the central stencils (u_{i+1} - u_{i-1}) / 2h (order 2) or
    (-u_{i+2} + 8u_{i+1} - 8u_{i-1} + u_{i-2}) / 12h (order 4).  Non-periodic
    ends use one-sided stencils of the same order, so the operator's order
    holds up to the boundary.
    """
    if order not in _ONE_SIDED_D1:
        raise ValueError(f"order must be 2 or 4, got {order}")
    axis = axis % u.ndim
    n = u.shape[axis]
    if n < order + 1:
        raise ValueError(f"axis {axis} has {n} points; order {order} needs at least {order + 1}")
    if periodic:
        r = lambda s: jnp.roll(u, -s, axis=axis)  # noqa: E731  (r(s)_i = u_{i+s})
        if order == 2:
            return (r(1) - r(-1)) / (2.0 * h)
        return (-r(2) + 8.0 * r(1) - 8.0 * r(-1) + r(-2)) / (12.0 * h)
    if order == 2:
        inner = (_take(u, axis, 2) - _take(u, axis, 0, -2)) / (2.0 * h)
    else:
        inner = (-_take(u, axis, 4) + 8.0 * _take(u, axis, 3, -1)
                 - 8.0 * _take(u, axis, 1, -3) + _take(u, axis, 0, -4)) / (12.0 * h)
    scale = _ONE_SIDED_D1_SCALE[order] * h
    rows = _ONE_SIDED_D1[order]
    lo = [_weighted(u, axis, w, 0) / scale for w in rows]
    rev = jnp.flip(u, axis=axis)
    hi = [-_weighted(rev, axis, w, 0) / scale for w in rows][::-1]
    return jnp.concatenate(lo + [inner] + hi, axis=axis)


# BDF weights on u_i, u_{i-1}, u_{i-2} and their scale (times h).
_BDF = {1: ((1.0, -1.0), 1.0), 2: ((3.0, -4.0, 1.0), 2.0)}


def diff1_backward(u: Float[Array, "..."], axis: int, h: float, *, order: int = 2
                   ) -> Float[Array, "..."]:
    """First derivative by the backward differentiation formula of ``order`` 1 or 2.

    ``(u_i - u_{i-1}) / h`` (BDF1) or ``(3u_i - 4u_{i-1} + u_{i-2}) / 2h`` (BDF2;
    BDF1 at i = 1, where only one earlier point exists).  Point 0 has no
    earlier point and gets the forward difference ``(u_1 - u_0) / h``.

    Along time this makes a residual causal: row i involves u_i and earlier
    values only, so the residual equations are an implicit (A- and L-stable)
    time-stepping scheme solved all at once.  Their least-squares problem is
    then well posed: a small residual means a small error.  A central
    difference instead decouples odd and even time rows (a leapfrog scheme,
    unstable for diffusion), whose computational mode a fit can exploit.
    """
    if order not in _BDF:
        raise ValueError(f"order must be 1 or 2, got {order}")
    axis = axis % u.ndim
    n = u.shape[axis]
    if n < order + 1:
        raise ValueError(f"axis {axis} has {n} points; BDF{order} needs at least {order + 1}")
    first = (_take(u, axis, 1, 2) - _take(u, axis, 0, 1)) / h
    w, scale = _BDF[order]
    start = order  # the first point with `order` earlier ones
    acc = 0.0
    for j, wj in enumerate(w):
        acc = acc + wj * _take(u, axis, start - j, n - j)
    parts = [first] * start + [acc / (scale * h)]
    return jnp.concatenate(parts, axis=axis)


def diff2(u: Float[Array, "..."], axis: int, h: float, *,
          periodic: bool = False) -> Float[Array, "..."]:
    """Second derivative along ``axis``; error O(h^2).

    Inside: the compact stencil (u_{i+1} - 2u_i + u_{i-1}) / h^2.  Non-periodic
    ends: (2u_0 - 5u_1 + 4u_2 - u_3) / h^2 (second order; the 3-point one-sided
    stencil would only be first order).
    """
    axis = axis % u.ndim
    if u.shape[axis] < 4:
        raise ValueError(f"axis {axis} has {u.shape[axis]} points; diff2 needs at least 4")
    if periodic:
        return (jnp.roll(u, -1, axis) - 2.0 * u + jnp.roll(u, 1, axis)) / h**2
    inner = (_take(u, axis, 2) - 2.0 * _take(u, axis, 1, -1) + _take(u, axis, 0, -2)) / h**2
    w = (2.0, -5.0, 4.0, -1.0)
    lo = _weighted(u, axis, w, 0) / h**2
    hi = _weighted(jnp.flip(u, axis=axis), axis, w, 0) / h**2
    return jnp.concatenate([lo, inner, hi], axis=axis)


def diff2_ghost(u: Float[Array, "..."], axis: int, h: float, lo_ghost, hi_ghost
                ) -> Float[Array, "..."]:
    """Compact second derivative with ghost values beyond both ends.

    ``(u_{i+1} - 2u_i + u_{i-1}) / h^2`` at every point, with ``u_{-1} =
    lo_ghost`` and ``u_n = hi_ghost`` (arrays broadcastable to ``u`` with
    ``axis`` removed).  This is the cell-centred finite-volume Laplacian, so a
    residual built on it is consistent with data made by such a scheme.  The
    result is affine in ``u`` when the ghosts are.
    """
    axis = axis % u.ndim
    if u.shape[axis] < 2:
        raise ValueError(f"axis {axis} has {u.shape[axis]} points; diff2_ghost needs at least 2")
    lo = jnp.expand_dims(jnp.broadcast_to(lo_ghost, _without(u.shape, axis)), axis).astype(u.dtype)
    hi = jnp.expand_dims(jnp.broadcast_to(hi_ghost, _without(u.shape, axis)), axis).astype(u.dtype)
    # Edge rows and interior rows computed apart and joined, rather than the
    # stencil applied to u padded with the ghosts: padding copies the whole
    # array, and its transpose (in every backward pass) copies it again.
    first = _take(u, axis, 1, 2) - 2.0 * _take(u, axis, 0, 1) + lo
    inner = _take(u, axis, 2) - 2.0 * _take(u, axis, 1, -1) + _take(u, axis, 0, -2)
    last = hi - 2.0 * _take(u, axis, -1) + _take(u, axis, -2, -1)
    return jnp.concatenate([first, inner, last], axis=axis) / h**2


def _without(shape, axis):
    return tuple(s for d, s in enumerate(shape) if d != axis)


def spectral_diff(u: Float[Array, "..."], axis: int, length: float, order: int = 1
                  ) -> Float[Array, "..."]:
    """``order``-th derivative along a periodic ``axis`` of period ``length``.

    Multiplies the Fourier coefficients by (i k)^order with k = 2 pi m / length.
    For odd orders and an even number of points the Nyquist mode is dropped
    (its derivative is not real on the grid).
    """
    axis = axis % u.ndim
    n = u.shape[axis]
    k = 2.0 * jnp.pi * jnp.fft.rfftfreq(n, d=length / n, dtype=u.dtype)
    mult = jax.lax.complex(jnp.zeros_like(k), k) ** order  # (i k)^order, complex of u's precision
    if order % 2 and n % 2 == 0:
        mult = mult.at[-1].set(0.0)
    shape = [1] * u.ndim
    shape[axis] = k.shape[0]
    uh = jnp.fft.rfft(u, axis=axis)
    return jnp.fft.irfft(uh * mult.reshape(shape), n=n, axis=axis).astype(u.dtype)


def derivative(u: Float[Array, "..."], axis_index: int, axis: Axis, order: int = 1, *,
               accuracy: int = 2, spectral: bool = True) -> Float[Array, "..."]:
    """Derivative of ``order`` 1 or 2 along a grid :class:`~pihc.grid.Axis`.

    Periodic axes use :func:`spectral_diff` when ``spectral`` is true, else
    the periodic finite-difference stencils; other axes use finite differences.
    """
    if axis.periodic and spectral:
        return spectral_diff(u, axis_index, axis.hi - axis.lo, order)
    if order == 1:
        return diff1(u, axis_index, axis.spacing, periodic=axis.periodic, order=accuracy)
    if order == 2:
        return diff2(u, axis_index, axis.spacing, periodic=axis.periodic)
    raise ValueError(f"finite-difference derivatives of order {order} are not implemented; use 1 or 2")
