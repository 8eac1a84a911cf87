r"""2D incompressible Navier-Stokes in vorticity form on the periodic square."""

from __future__ import annotations

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..derivatives import diff1, diff1_backward
from ..grid import Axis, Grid, GridError
from .base import PDE

__all__ = ["NavierStokes2D", "navier_stokes_grid", "spectral_operators"]

TimeStencil = Literal["midpoint", "backward", "central"]
_ORDERS = {"midpoint": (2,), "backward": (1, 2), "central": (2, 4)}


class NavierStokes2D(PDE):
    r"""Vorticity form of the 2D incompressible Navier-Stokes equations.

    .. math::
        w_t + u\, w_x + v\, w_y = \nu\, \Delta w + f, \qquad
        -\Delta \psi = w, \quad u = \psi_y, \quad v = -\psi_x,

    on the torus ``[0, L_x) x [0, L_y)`` (the grid's periodic x and y axes),
    t in [0, T].  The velocity ``(u, v)`` is divergence free by construction.
    Only the zero-mean part of ``w`` drives the flow: the stream function of
    the mean mode is set to 0 (the mean of ``w`` is conserved by the PDE).

    Terms (all affine in ``w``): ``L = w_t - nu lap_w - f``, ``w_x``, ``w_y``,
    ``u``, ``v``.  The residual's linear operators are summed into one term
    ``L`` (``f`` is its constant part): the constraint layer carries every
    term on every basis column at every sampled point, and each of its
    solver iterations reads them all, so five terms instead of six (or
    seven with a forcing) make that array, and each pass over it, smaller.
    Spatial derivatives and the velocity are spectral (exact for the
    trigonometric polynomials the grid resolves; the odd derivatives drop the
    Nyquist mode, as :func:`pihc.derivatives.spectral_diff` does).  The
    residual

    .. math::  F = L + u\, w_x + v\, w_y, \qquad L = w_t - \nu\, \Delta w - f,

    is pointwise in the terms.  The time stencil (``time_stencil``):

    ``"midpoint"`` (default)
        the implicit midpoint rule: the residual row ``i >= 1`` sits at
        ``t_{i-1/2}``, with ``w_t = (w_i - w_{i-1}) / dt`` and every other
        term taken of ``(w_i + w_{i-1}) / 2``.  Second order, causal (row
        ``i`` reads ``w_i`` and ``w_{i-1}`` only: the rows are an implicit
        one-step scheme, so a zero residual with the initial rows determines
        ``w``), and without numerical dissipation or phase-error growth from a
        computational mode, which matters for a flow with ``nu = 1e-4``.
    ``"backward"``
        BDF1/BDF2 at ``t_i``, ``i >= 1`` (causal, dissipative).
    ``"central"``
        central differences of order 2 or 4 at every ``t_i`` (one-sided at the
        ends), not causal.

    The discretisation floor of each (the error of the best grid function
    under the residual; :mod:`pihc.training.floor`) is measured in
    docs/design.md.

    Attributes:
        viscosity: nu (1e-4: Reynolds number 1e4 for unit velocity and length).
        forcing: ``f(x, y)``, shape ``(nx, ny)`` on the grid's x and y points,
            or ``None`` (no forcing; the paper's problem).
        time_stencil: ``"midpoint"``, ``"backward"`` or ``"central"``.
        time_accuracy: order of ``w_t``: 2 for ``"midpoint"``, 1 or 2 for
            ``"backward"``, 2 or 4 for ``"central"``.
        subtract_mean: :meth:`parametrise` removes each basis column's
            spatial mean at every time (as the paper's code does): the PDE
            conserves the mean of ``w`` and the flow ignores it, so a basis
            mean is a direction the fit cannot use.  With the initial
            condition by construction the prediction then keeps ``w0``'s mean.
    """

    viscosity: float | Array = 1e-4
    forcing: Float[Array, "*batch nx ny"] | None = None
    time_stencil: TimeStencil = eqx.field(static=True, default="midpoint")
    time_accuracy: int = eqx.field(static=True, default=2)
    subtract_mean: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.time_stencil not in _ORDERS:
            raise ValueError(f"time_stencil must be one of {tuple(_ORDERS)}, got {self.time_stencil!r}")
        if self.time_accuracy not in _ORDERS[self.time_stencil]:
            raise ValueError(f"time_accuracy {self.time_accuracy} is not available for the"
                             f" {self.time_stencil} stencil; use one of {_ORDERS[self.time_stencil]}")

    @property
    def term_names(self) -> tuple[str, ...]:
        linear = "w_t - nu lap_w" if self.forcing is None else "w_t - nu lap_w - f"
        return (linear, "w_x", "w_y", "u", "v")

    @property
    def curvature_pairs(self) -> tuple[tuple[str, str], ...]:
        return (("w_x", "u"), ("w_y", "v"))  # F = L + u w_x + v w_y: bilinear in these pairs only

    def check_grid(self, grid: Grid) -> None:
        if grid.names != ("t", "x", "y"):
            raise GridError(f"Navier-Stokes 2D needs axes ('t', 'x', 'y'), got {grid.names}")
        if grid.axis("t").kind != "nodes":
            raise GridError("Navier-Stokes 2D needs a time axis of kind 'nodes' (t = 0 included)")
        for name in ("x", "y"):
            a = grid.axis(name)
            if a.kind != "periodic":
                raise GridError(f"Navier-Stokes 2D lives on the torus: axis {name!r} must be 'periodic',"
                                f" got {a.kind!r}; use pihc.navier_stokes_grid")
            if a.n < 4:
                raise GridError(f"axis {name!r} has {a.n} points; the spectral derivatives need at least 4")
        need = {"midpoint": 2, "backward": self.time_accuracy + 1, "central": self.time_accuracy + 1}
        if grid.axis("t").n < need[self.time_stencil]:
            raise GridError(f"the {self.time_stencil} time stencil of order {self.time_accuracy} needs at"
                            f" least {need[self.time_stencil]} times, the grid has {grid.axis('t').n}")
        if self.forcing is not None and tuple(jnp.shape(self.forcing))[-2:] != grid.shape[1:]:
            raise GridError(f"the forcing has shape {tuple(jnp.shape(self.forcing))}; the grid's x, y"
                            f" need {grid.shape[1:]}")

    def _time(self, w: Float[Array, "nt nx ny"], dt: float):
        """(w at the rows' times, w_t there) for the time stencil."""
        if self.time_stencil == "midpoint":
            mid = 0.5 * (w[1:] + w[:-1])
            dw = (w[1:] - w[:-1]) / dt
            # Row 0 (outside the residual domain) holds w_0 and the forward difference.
            return jnp.concatenate([w[:1], mid]), jnp.concatenate([dw[:1], dw])
        if self.time_stencil == "backward":
            return w, diff1_backward(w, 0, dt, order=self.time_accuracy)
        return w, diff1(w, 0, dt, order=self.time_accuracy)

    def terms(self, u: Float[Array, "nt nx ny"], grid: Grid) -> Float[Array, "nt nx ny n_terms"]:
        ax, ay = grid.axis("x"), grid.axis("y")
        w, w_t = self._time(u, grid.spacing("t"))
        ops = spectral_operators(ax.n, ay.n, ax.hi - ax.lo, ay.hi - ay.lo, u.dtype)
        packed = _packed_operators(ax.n, ay.n, ax.hi - ax.lo, ay.hi - ay.lo, u.dtype)
        wh = jnp.fft.rfft2(w, axes=(-2, -1))
        lead = (1,) * (wh.ndim - 2)
        # Two real terms per complex inverse transform: each operator is real (its multiplier is
        # Hermitian), so ifft2(m_a W + i m_b W) = L_a w + i L_b w, and one complex 2-D transform
        # costs about what one real (irfft2) transform costs in XLA's CPU FFT.
        full = _full_spectrum(wh, ay.n)

        def pair(mult):
            z = jnp.fft.ifft2(full * mult.reshape(lead + mult.shape), axes=(-2, -1))
            return z.real.astype(u.dtype), z.imag.astype(u.dtype)

        w_x, w_y = pair(packed["dx+i dy"])
        vel_u, vel_v = pair(packed["u+i v"])
        lap = jnp.fft.irfft2(wh * ops["lap"].reshape(lead + ops["lap"].shape), s=(ax.n, ay.n),
                             axes=(-2, -1)).astype(u.dtype)
        linear = w_t - self.viscosity * lap
        if self.forcing is not None:
            linear = linear - jnp.broadcast_to(jnp.asarray(self.forcing, u.dtype), w.shape)
        return jnp.stack([linear.astype(u.dtype), w_x, w_y, vel_u, vel_v], axis=-1)

    def parametrise(self, basis: Float[Array, "nt nx ny n_basis"], u0: Float[Array, "nx ny"], grid: Grid
                    ) -> tuple[Float[Array, "nt nx ny n_basis"], Float[Array, "nt nx ny"]]:
        B = basis - jnp.mean(basis, axis=(1, 2), keepdims=True) if self.subtract_mean else basis
        return B, jnp.zeros(basis.shape[:-1], basis.dtype)

    def residual(self, terms: Float[Array, "*points n_terms"]) -> Float[Array, "*points"]:
        linear, w_x, w_y, u, v = (terms[..., i] for i in range(5))
        return linear + u * w_x + v * w_y

    def residual_domain(self, grid: Grid) -> np.ndarray:
        mask = np.ones(grid.shape, bool)
        if self.time_stencil != "central":
            mask[0] = False  # causal stencils: row i >= 1 reads w_{i-1}; row 0 is the initial condition's
        return mask

    def initial_rows(self, u: Float[Array, "nt nx ny"], u0: Float[Array, "nx ny"], grid: Grid
                     ) -> Float[Array, " n_ic"]:
        return (u[0] - u0).reshape(-1)

    def initial_row_points(self, grid: Grid) -> np.ndarray:
        _, nx, ny = grid.shape
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        return np.stack([np.zeros(nx * ny, int), ix.ravel(), iy.ravel()], axis=-1)

    def boundary_rows(self, u: Float[Array, "nt nx ny"], grid: Grid) -> Float[Array, " 0"]:
        return jnp.zeros((0,), u.dtype)  # periodic: no boundary

    def boundary_row_points(self, grid: Grid) -> np.ndarray:
        return np.zeros((0, 3), int)


def spectral_operators(nx: int, ny: int, lx: float = 1.0, ly: float = 1.0, dtype=jnp.float64) -> dict:
    r"""Fourier multipliers on ``rfft2`` coefficients, shape ``(nx, ny // 2 + 1)``, complex.

    ``dx, dy``: ``i k_x``, ``i k_y`` (Nyquist modes dropped: their derivative
    is not real on the grid); ``lap``: ``-|k|^2``; ``u, v``: the velocity of
    the stream function, ``u = psi_y = i k_y / |k|^2``, ``v = -psi_x = -i k_x / |k|^2``
    (0 for the mean mode).  ``k = 2 pi m / L``.
    """
    kx = 2.0 * np.pi * np.fft.fftfreq(nx, d=lx / nx)
    ky = 2.0 * np.pi * np.fft.rfftfreq(ny, d=ly / ny)
    kxo, kyo = kx.copy(), ky.copy()
    if nx % 2 == 0:
        kxo[nx // 2] = 0.0
    if ny % 2 == 0:
        kyo[-1] = 0.0
    KX, KY = np.meshgrid(kx, ky, indexing="ij")
    KXo, KYo = np.meshgrid(kxo, kyo, indexing="ij")
    k2 = KX**2 + KY**2
    inv = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
    zero = np.zeros_like(k2)
    c = lambda re, im: jax.lax.complex(jnp.asarray(re, dtype), jnp.asarray(im, dtype))  # noqa: E731
    return {"dx": c(zero, KXo), "dy": c(zero, KYo), "lap": c(-k2, zero),
            "u": c(zero, KYo * inv), "v": c(zero, -KXo * inv)}


def _full_spectrum(half: Array, ny: int) -> Array:
    """The full ``fft2`` spectrum of a real field from its ``rfft2`` half: ``W(k) = conj W(-k)``."""
    nx = half.shape[-2]
    mirrored = jnp.conj(half[..., (-np.arange(nx)) % nx, :])  # W(-kx, ky)
    return jnp.concatenate([half, mirrored[..., 1:ny - ny // 2][..., ::-1]], axis=-1)


def _packed_operators(nx: int, ny: int, lx: float, ly: float, dtype) -> dict:
    """Multipliers on the full ``fft2`` spectrum, shape ``(nx, ny)``, that pack two real terms in one
    complex field: ``"dx+i dy"`` gives ``w_x + i w_y``, ``"u+i v"`` gives ``u + i v``.

    The same operators as :func:`spectral_operators` (Nyquist modes dropped from the odd
    derivatives), each Hermitian, so its part of the packed inverse transform is real.
    """
    kx = 2.0 * np.pi * np.fft.fftfreq(nx, d=lx / nx)
    ky = 2.0 * np.pi * np.fft.fftfreq(ny, d=ly / ny)
    kxo, kyo = kx.copy(), ky.copy()
    if nx % 2 == 0:
        kxo[nx // 2] = 0.0
    if ny % 2 == 0:
        kyo[ny // 2] = 0.0
    KX, KY = np.meshgrid(kx, ky, indexing="ij")
    KXo, KYo = np.meshgrid(kxo, kyo, indexing="ij")
    k2 = KX**2 + KY**2
    inv = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
    c = lambda re, im: jax.lax.complex(jnp.asarray(re, dtype), jnp.asarray(im, dtype))  # noqa: E731
    # i kx + i (i ky) and (i ky / k^2) + i (-i kx / k^2).
    return {"dx+i dy": c(-KYo, KXo), "u+i v": c(KXo * inv, KYo * inv)}


def navier_stokes_grid(nt: int = 64, nx: int = 64, ny: int = 64, t_end: float = 5.0) -> Grid:
    """``nt`` times in [0, t_end] (t = 0 included) x ``nx`` x ``ny`` periodic points ``i / n`` on [0, 1)."""
    return Grid((Axis("t", nt, 0.0, t_end, "nodes"), Axis("x", nx, 0.0, 1.0, "periodic"),
                 Axis("y", ny, 0.0, 1.0, "periodic")))
