r"""Periodic viscous Burgers, a PDE pihc does not ship: the PDE, its problem and a reference solver.

.. math::  u_t + u\, u_x = \nu\, u_{xx}, \qquad x \in [0, 1) \text{ periodic}, \quad t \in [0, T].

Train it (from the repository root, where ``examples`` is importable)::

    pihc train --config examples/burgers.yaml --out runs/burgers
    pihc evaluate runs/burgers

docs/pdes.md walks through this file.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import pihc
from pihc import derivatives


class Burgers(pihc.PDE):
    """``F = u_t + u u_x - viscosity u_xx``: BDF2 in time, spectral in x (exact on the periodic grid).

    Only the terms and the residual are written here: the defaults of
    :class:`pihc.PDE` give the rest (the residual for ``t > 0``, the initial
    rows ``u(0) - u0``, no boundary rows on the periodic axis).
    """

    viscosity: float = 0.02

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("u", "u_t", "u_x", "u_xx")

    def terms(self, u, grid):
        period = grid.axis("x").hi - grid.axis("x").lo
        u_t = derivatives.diff1_backward(u, 0, grid.spacing("t"))
        u_x = derivatives.spectral_diff(u, 1, period, 1)
        u_xx = derivatives.spectral_diff(u, 1, period, 2)
        return jnp.stack([u, u_t, u_x, u_xx], axis=-1)  # each linear in u

    def residual(self, terms):
        u, u_t, u_x, u_xx = (terms[..., i] for i in range(4))
        return u_t + u * u_x - self.viscosity * u_xx  # nonlinear, pointwise

    def check_grid(self, grid):
        if grid.names != ("t", "x") or not grid.axis("x").periodic:
            raise pihc.GridError(f"Burgers needs axes ('t', 'x') with x periodic, got {grid.names}")


class BurgersProblem(pihc.Problem):
    """Burgers from random smooth initial conditions; the fields are the config's ``problem_options``.

    Attributes:
        viscosity: nu.
        t_end: T, the last time.
        amplitude: a bound on |u0|.
        modes: the initial condition's Fourier modes, 1 .. modes.
    """

    viscosity: float = 0.02
    t_end: float = 0.5
    amplitude: float = 0.5
    modes: int = 3

    @property
    def pde(self) -> Burgers:
        return Burgers(self.viscosity)

    def grid(self, shape):
        nt, nx = shape
        return pihc.Grid((pihc.Axis("t", nt, 0.0, self.t_end), pihc.Axis("x", nx, 0.0, 1.0, "periodic")))

    def initial_condition(self, seed, grid):
        # sum_k a_k sin(2 pi k x + phi_k) / k, scaled by a bound on its maximum: a function of x,
        # so the same seed gives the same u0 on every grid.
        rng = np.random.default_rng(seed)
        k = np.arange(1, self.modes + 1)
        a, phase = rng.normal(size=self.modes) / k, rng.uniform(0.0, 2 * np.pi, self.modes)
        x = grid.coords("x")[:, None]
        return self.amplitude * (a * np.sin(2 * np.pi * k * x + phase)).sum(1) / np.abs(a).sum()

    def solve(self, u0, grid):
        return spectral_solve(u0, grid, lambda u, ux: -u * ux, self.viscosity)


def spectral_solve(u0, grid, nonlinear, diffusivity, refine: int = 4, max_step: float = 1e-3):
    r"""Reference solutions of ``u_t = D u_xx + N(u, u_x)`` on a periodic x, for a batch ``u0`` (n, nx).

    Pseudo-spectral on ``refine`` times finer points (``u0`` is band-limited, so
    zero-padding its spectrum is exact), 2/3 dealiased, stepped by ETDRK4
    (Cox & Matthews; the coefficients by Kassam & Trefethen's contour
    integral): the stiff diffusion is integrated exactly, the rest at fourth
    order, with at most ``max_step`` per step; sampled back on ``grid``.
    """
    u0 = np.atleast_2d(np.asarray(u0, np.float64))
    n, nx = u0.shape
    m = refine * nx
    length = grid.axis("x").hi - grid.axis("x").lo
    k = 2 * np.pi * np.fft.rfftfreq(m, d=length / m)
    keep = np.arange(k.size) < m // 3  # 2/3 rule
    v = np.zeros((n, k.size), complex)
    v[:, : nx // 2 + 1] = np.fft.rfft(u0, axis=1) * refine
    v[:, nx // 2] *= 0.5 if nx % 2 == 0 else 1.0  # the Nyquist mode of u0 splits into +-k on the finer grid

    def N(vh):
        u, ux = np.fft.irfft(vh, m, axis=1), np.fft.irfft(1j * k * vh, m, axis=1)
        return np.fft.rfft(nonlinear(u, ux), axis=1) * keep

    t = grid.coords("t")
    steps = int(np.ceil((t[1] - t[0]) / max_step))
    h = (t[1] - t[0]) / steps
    L = -diffusivity * k**2
    E, E2 = np.exp(h * L), np.exp(h * L / 2)
    r = np.exp(1j * np.pi * (np.arange(1, 33) - 0.5) / 32)  # contour points around each h L
    LR = h * L[:, None] + r[None, :]
    Q = h * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = h * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, axis=1))
    f2 = h * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, axis=1))
    f3 = h * np.real(np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, axis=1))
    out = [np.fft.irfft(v, m, axis=1)]
    for _ in range(len(t) - 1):
        for _ in range(steps):
            Nv = N(v)
            a = E2 * v + Q * Nv
            Na = N(a)
            b = E2 * v + Q * Na
            Nb = N(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = N(c)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        out.append(np.fft.irfft(v, m, axis=1))
    return np.stack(out, axis=1)[:, :, ::refine]
