"""Fourier Neural Operator (Li et al. 2021, "Fourier Neural Operator for Parametric PDEs").

Channels-last, one sample per call, any number of grid dimensions (2 for
(t, x), 3 for (t, x, y)); ``jax.vmap`` over a batch.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["SpectralConv", "FNO", "max_modes"]


def max_modes(grid_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Largest Fourier modes per axis: ``n // 2`` on leading axes (both signs
    are kept), ``n // 2 + 1`` on the last (real FFT) axis."""
    return tuple(n // 2 for n in grid_shape[:-1]) + (grid_shape[-1] // 2 + 1,)


class _Pointwise(eqx.Module):
    """A 1x1 convolution: ``x @ W + b`` on the channel axis."""

    weight: Array
    bias: Array

    def __init__(self, c_in: int, c_out: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        lim = 1.0 / math.sqrt(c_in)
        kw, kb = jax.random.split(key)
        self.weight = jax.random.uniform(kw, (c_in, c_out), dtype, -lim, lim)
        self.bias = jax.random.uniform(kb, (c_out,), dtype, -lim, lim)

    def __call__(self, x):
        return x @ self.weight + self.bias


class SpectralConv(eqx.Module):
    """Fourier layer: keep the lowest ``modes`` frequencies, multiply them by
    learned complex matrices, transform back.

    ``v -> irfftn( W(k) . rfftn(v)(k) )`` with ``W(k)`` a ``(c_in, c_out)``
    complex matrix per kept frequency ``k``: the first ``modes[i]`` positive
    and ``modes[i]`` negative frequencies on each leading axis and the first
    ``modes[-1]`` on the last (real-FFT) axis, i.e. ``2^(d-1)`` corner blocks.

    Args:
        in_channels, out_channels: channel counts.
        modes: kept frequencies per grid axis.
        key: PRNG key.
        dtype: real dtype of the weights (float32 or float64).
    """

    weight_re: Array
    weight_im: Array
    modes: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, ...], *,
                 key: PRNGKeyArray, dtype=jnp.float32):
        self.modes = tuple(int(m) for m in modes)
        corners = 2 ** (len(self.modes) - 1)
        shape = (corners, in_channels, out_channels) + self.modes
        scale = 1.0 / (in_channels * out_channels)
        kr, ki = jax.random.split(key)
        self.weight_re = scale * jax.random.uniform(kr, shape, dtype)
        self.weight_im = scale * jax.random.uniform(ki, shape, dtype)

    def check(self, grid_shape: tuple[int, ...]) -> None:
        """Raise ValueError if the modes do not fit ``grid_shape``."""
        if len(grid_shape) != len(self.modes):
            raise ValueError(f"modes {self.modes} need a {len(self.modes)}-D grid, got shape {grid_shape}")
        for d, (m, lim) in enumerate(zip(self.modes, max_modes(grid_shape))):
            if m > lim:
                raise ValueError(f"axis {d} has {grid_shape[d]} points: at most {lim} Fourier modes fit,"
                                 f" {m} requested")

    def __call__(self, x: Float[Array, "*grid c_in"]) -> Float[Array, "*grid c_out"]:
        grid = x.shape[:-1]
        self.check(grid)
        d = len(grid)
        axes = tuple(range(d))
        x_ft = jnp.fft.rfftn(x, axes=axes)
        out_shape = x_ft.shape[:-1] + (self.weight_re.shape[2],)
        out = jnp.zeros(out_shape, x_ft.dtype)
        w = (self.weight_re + 1j * self.weight_im).astype(x_ft.dtype)
        letters = "abcdefgh"[:d]
        eq = f"{letters}i,io{letters}->{letters}o"
        for c, signs in enumerate(itertools.product((0, 1), repeat=d - 1)):
            idx = tuple(slice(0, m) if s == 0 else slice(n - m, n)
                        for s, m, n in zip(signs, self.modes[:-1], grid[:-1]))
            idx = idx + (slice(0, self.modes[-1]),)
            out = out.at[idx].set(jnp.einsum(eq, x_ft[idx], w[c]))
        return jnp.fft.irfftn(out, s=grid, axes=axes).astype(x.dtype)


class FNO(eqx.Module):
    """Fourier Neural Operator on a d-dimensional grid, channels last.

    ``lift -> n_layers x [act(SpectralConv(v) + W v)] -> project`` (no
    activation after the last Fourier layer), with a two-layer pointwise
    projection ``width -> 128 -> out_channels``, as in the reference FNO.

    Args:
        in_channels: input channels (e.g. 3 for (t, x, u0)).
        out_channels: output channels (1 for PI-SC, N basis functions for PI-HC).
        width: hidden channels.
        modes: Fourier modes kept per grid axis.
        n_layers: Fourier layers.
        padding: zeros appended at the end of each grid axis before the
            Fourier layers (for non-periodic axes) and cropped after.
        activation: pointwise nonlinearity (GELU).
        key: PRNG key.
        dtype: parameter dtype (float32 by default; inputs are cast to it).

    Example:
        >>> fno = FNO(3, 16, width=32, modes=(8, 8), n_layers=4, key=jax.random.key(0))
        >>> fno(jnp.zeros((51, 256, 3))).shape
        (51, 256, 16)
    """

    lift: _Pointwise
    spectral: tuple[SpectralConv, ...]
    pointwise: tuple[_Pointwise, ...]
    proj1: _Pointwise
    proj2: _Pointwise
    padding: tuple[int, ...] = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 64,
                 modes: tuple[int, ...] = (8, 8), n_layers: int = 5,
                 padding: tuple[int, ...] | None = None, activation: Callable = jax.nn.gelu,
                 key: PRNGKeyArray, dtype=jnp.float32):
        keys = jax.random.split(key, 2 * n_layers + 3)
        self.lift = _Pointwise(in_channels, width, key=keys[0], dtype=dtype)
        self.spectral = tuple(SpectralConv(width, width, modes, key=keys[1 + i], dtype=dtype)
                              for i in range(n_layers))
        self.pointwise = tuple(_Pointwise(width, width, key=keys[1 + n_layers + i], dtype=dtype)
                               for i in range(n_layers))
        self.proj1 = _Pointwise(width, 128, key=keys[-2], dtype=dtype)
        self.proj2 = _Pointwise(128, out_channels, key=keys[-1], dtype=dtype)
        self.padding = tuple(padding) if padding is not None else (0,) * len(modes)
        if len(self.padding) != len(modes):
            raise ValueError(f"padding {self.padding} needs one entry per grid axis (modes {modes})")
        self.activation = activation

    def __call__(self, x: Float[Array, "*grid c_in"]) -> Float[Array, "*grid c_out"]:
        grid = x.shape[:-1]
        x = x.astype(self.lift.weight.dtype)
        v = self.lift(x)
        if any(self.padding):
            v = jnp.pad(v, [(0, p) for p in self.padding] + [(0, 0)])
        for i, (sc, pw) in enumerate(zip(self.spectral, self.pointwise)):
            v = sc(v) + pw(v)
            if i < len(self.spectral) - 1:
                v = self.activation(v)
        if any(self.padding):
            v = v[tuple(slice(0, n) for n in grid)]
        return self.proj2(self.activation(self.proj1(v)))
