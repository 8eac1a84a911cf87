"""Fourier Neural Operator (Li et al. 2021, "Fourier Neural Operator for Parametric PDEs").

Channels last, one sample per call (``jax.vmap`` over a batch), any number of
grid dimensions: 2 for ``(t, x)``, 3 for ``(t, x, y)``.

* :class:`SpectralConv`: the Fourier layer ``v -> irfftn(R(k) . rfftn(v)(k))``
  on the lowest frequencies.
* :class:`FNO`: lifting, ``n_layers`` Fourier layers ``act(SpectralConv(v) + W v)``
  and a two-layer pointwise projection.
* :func:`max_modes`: the most Fourier modes a grid allows per axis, to
  validate a configuration before any compute.

Reference: Z. Li, N. Kovachki, K. Azizzadenesheli, B. Liu, K. Bhattacharya,
A. Stuart, A. Anandkumar, "Fourier Neural Operator for Parametric Partial
Differential Equations", ICLR 2021 (arXiv 2010.08895).
"""

import itertools
import math
from collections.abc import Callable, Sequence
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["SpectralConv", "FNO", "max_modes"]

# einsum letters for the grid axes; "i" and "o" are the channel axes.
_GRID_LETTERS = "abcdefghjklmn"


def max_modes(grid_shape: Sequence[int]) -> tuple[int, ...]:
    """The most Fourier modes per axis that fit a grid of shape ``grid_shape``.

    On a leading axis of ``n`` points the layer keeps ``m`` positive and ``m``
    negative frequencies, so ``2 m <= n``, i.e. ``m <= n // 2``.  On the last
    axis (real FFT, ``n // 2 + 1`` non-negative frequencies) ``m <= n // 2 + 1``.

    Args:
        grid_shape: the grid's shape, without the channel axis.

    Returns:
        One limit per axis.

    Example:
        >>> max_modes((101, 1024))
        (50, 513)
    """
    shape = tuple(int(n) for n in grid_shape)
    if not shape:
        raise ValueError("a grid needs at least one axis")
    return tuple(n // 2 for n in shape[:-1]) + (shape[-1] // 2 + 1,)


def _check_modes(modes: tuple[int, ...], grid_shape: tuple[int, ...], what: str = "") -> None:
    if len(grid_shape) != len(modes):
        raise ValueError(f"modes {modes} need a {len(modes)}-D grid (input of rank {len(modes) + 1},"
                         f" channels last); got grid shape {grid_shape}")
    for axis, (m, n, limit) in enumerate(zip(modes, grid_shape, max_modes(grid_shape))):
        if m > limit:
            rule = "n // 2 + 1 on the last (real-FFT) axis" if axis == len(modes) - 1 else \
                "n // 2 on a leading axis (m positive and m negative frequencies)"
            raise ValueError(f"grid axis {axis} has {n} points{what}: at most {limit} Fourier modes fit"
                             f" ({rule}); {m} requested")


def _param_dtype(dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ValueError(f"parameter dtype must be float32 or float64, got {dtype}")
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError("float64 parameters need double precision in JAX: call pihc.enable_x64()"
                         " (or jax.config.update('jax_enable_x64', True)) before building the model")
    return dtype


def _uniform(key: PRNGKeyArray, shapes: Sequence[tuple[int, ...]], dtype, lo: float, hi: float
             ) -> list[Array]:
    # One flat draw cut into the requested shapes: every draw is a threefry
    # kernel for XLA to compile, and high-rank ones take seconds on CPU.
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), dtype, lo, hi)
    starts = itertools.accumulate(sizes, initial=0)
    return [flat[a:a + n].reshape(s) for a, n, s in zip(starts, sizes, shapes)]


def _check_positive(**counts: int) -> None:
    for name, c in counts.items():
        if int(c) < 1:
            raise ValueError(f"{name} must be a positive integer, got {c}")


@final
class _Pointwise(eqx.Module):
    """A 1x1 convolution on the channel axis: ``x @ weight + bias``.

    Initialised like ``torch.nn.Linear``: uniform in ``[-1/sqrt(c_in), 1/sqrt(c_in))``.
    """

    weight: Float[Array, "c_in c_out"]
    bias: Float[Array, " c_out"]

    def __init__(self, c_in: int, c_out: int, *, key: PRNGKeyArray, dtype=jnp.float32):
        lim = 1.0 / math.sqrt(c_in)
        self.weight, self.bias = _uniform(key, [(c_in, c_out), (c_out,)], dtype, -lim, lim)

    def __call__(self, x: Float[Array, "*grid c_in"]) -> Float[Array, "*grid c_out"]:
        # Reshape the bias to the input's rank: no implicit rank promotion.
        return x @ self.weight + self.bias.reshape((1,) * (x.ndim - 1) + (-1,))


@final
class SpectralConv(eqx.Module):
    """Fourier layer: a learned linear map on the lowest frequencies of the input.

    For ``v`` on a ``d``-dimensional periodic grid with ``c_in`` channels,

        ``SpectralConv(v) = irfftn( R(k) . rfftn(v)(k) )``,

    where ``rfftn`` runs over the grid axes (real FFT on the last one) and
    ``R(k)`` is a learned complex ``(c_in, c_out)`` matrix for each kept
    frequency ``k`` and zero elsewhere.  Kept are the frequencies ``0..m-1``
    and ``-m..-1`` on each leading axis (``m = modes[i]``) and ``0..m-1`` on
    the last axis (``m = modes[-1]``): ``2^(d-1)`` corner blocks of the
    half-spectrum.  The truncated spectrum is computed axis by axis (the
    leading-axis FFTs only on the kept columns) and all corners are multiplied
    in one einsum over the channels.  The output has the input's grid shape,
    so the same weights apply at any resolution; frequencies a coarse grid
    cannot hold are not there to be kept (see :func:`max_modes`).

    Weights are stored as real and imaginary parts, ``weight_re`` and
    ``weight_im``, each of shape ``(2^(d-1), c_in, c_out, *modes)``.  Corner
    ``c`` has the binary digits ``s_0 .. s_{d-2}`` (first axis most
    significant); ``s_j = 0`` selects the positive frequencies ``0..m_j-1``
    of leading axis ``j`` and ``s_j = 1`` the negative ones ``-m_j..-1``
    (FFT indices ``n_j-m_j..n_j-1``), in increasing index order.
    Initialisation as in the reference FNO: ``1 / (c_in c_out)`` times
    uniform ``[0, 1)`` for both parts.

    Args:
        in_channels: input channels ``c_in``.
        out_channels: output channels ``c_out``.
        modes: frequencies kept per grid axis (its length is the grid
            dimension ``d``).  A grid of shape ``n`` allows at most
            :func:`max_modes` ``(n)``; this is checked at call time.
        key: PRNG key for the weights.
        dtype: real dtype of the weights, float32 (default) or float64
            (needs ``jax_enable_x64``).  Inputs are cast to it.

    Example:
        >>> conv = SpectralConv(3, 4, (8, 8), key=jax.random.key(0))
        >>> conv(jnp.ones((32, 64, 3))).shape
        (32, 64, 4)
    """

    weight_re: Float[Array, "corners c_in c_out *modes"]
    weight_im: Float[Array, "corners c_in c_out *modes"]
    modes: tuple[int, ...] = eqx.field(static=True)

    max_modes = staticmethod(max_modes)

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], *,
                 key: PRNGKeyArray, dtype=jnp.float32):
        dtype = _param_dtype(dtype)
        _check_positive(in_channels=in_channels, out_channels=out_channels)
        self.modes = tuple(int(m) for m in modes)
        if not 1 <= len(self.modes) <= len(_GRID_LETTERS):
            raise ValueError(f"modes needs one entry per grid axis (1 to {len(_GRID_LETTERS)}), got {modes}")
        if any(m < 1 for m in self.modes):
            raise ValueError(f"every mode count must be at least 1, got {self.modes}")
        shape = (2 ** (len(self.modes) - 1), in_channels, out_channels) + self.modes
        scale = 1.0 / (in_channels * out_channels)
        self.weight_re, self.weight_im = _uniform(key, [shape, shape], dtype, 0.0, scale)

    @property
    def in_channels(self) -> int:
        return self.weight_re.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight_re.shape[2]

    def check(self, grid_shape: Sequence[int]) -> None:
        """Raise ValueError, naming the axis, if the modes do not fit ``grid_shape``."""
        _check_modes(self.modes, tuple(int(n) for n in grid_shape))

    def __call__(self, x: Float[Array, "*grid c_in"]) -> Float[Array, "*grid c_out"]:
        grid = tuple(x.shape[:-1])
        self.check(grid)
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"SpectralConv expects {self.in_channels} input channels (last axis),"
                             f" got shape {x.shape}")
        d, modes = len(grid), self.modes
        # rfftn, one axis at a time, truncating as we go: the real FFT of the
        # last axis first, then the complex FFTs of the leading axes on only
        # the kept modes[-1] columns.  Same numbers as slicing rfftn(x), but
        # the leading-axis FFTs (e.g. over 101 time levels, a prime length)
        # run on modes[-1] columns instead of n // 2 + 1.
        h = jnp.fft.rfft(x.astype(self.weight_re.dtype), axis=d - 1)
        h = jax.lax.slice_in_dim(h, 0, modes[-1], axis=d - 1)
        for axis in range(d - 1):
            n, m = grid[axis], modes[axis]
            h = jnp.fft.fft(h, axis=axis)
            h = jnp.concatenate([jax.lax.slice_in_dim(h, 0, m, axis=axis),
                                 jax.lax.slice_in_dim(h, n - m, n, axis=axis)], axis=axis)
        # h holds the 2^(d-1) corner blocks side by side, shape
        # (2 m_0, ..., 2 m_{d-2}, m_{d-1}, c_in): one einsum with the weights
        # laid out the same way multiplies every corner at once.
        g = _GRID_LETTERS[:d]
        h = jnp.einsum(f"{g}i,io{g}->{g}o", h, self._compact_weight())
        # irfftn in reverse: zero-fill and inverse-FFT the leading axes on the
        # kept columns, then zero-fill the last axis and take the real inverse FFT.
        for axis in reversed(range(d - 1)):
            n, m = grid[axis], modes[axis]
            gap = list(h.shape)
            gap[axis] = n - 2 * m
            h = jnp.concatenate([jax.lax.slice_in_dim(h, 0, m, axis=axis), jnp.zeros(gap, h.dtype),
                                 jax.lax.slice_in_dim(h, m, 2 * m, axis=axis)], axis=axis)
            h = jnp.fft.ifft(h, axis=axis)
        pad = [(0, 0)] * (d - 1) + [(0, grid[-1] // 2 + 1 - modes[-1]), (0, 0)]
        return jnp.fft.irfft(jnp.pad(h, pad), n=grid[-1], axis=d - 1)

    def _compact_weight(self) -> Array:
        """The complex weights as one array ``(c_in, c_out, 2 m_0, ..., 2 m_{d-2}, m_{d-1})``.

        Corner bit ``s_j`` and in-block index ``k`` on leading axis ``j`` become
        the index ``s_j m_j + k``: positive frequencies first, then negative.
        """
        d, modes = len(self.modes), self.modes
        c_in, c_out = self.in_channels, self.out_channels
        w = jax.lax.complex(self.weight_re, self.weight_im)
        w = w.reshape((2,) * (d - 1) + (c_in, c_out) + modes)
        # axes now: bits 0..d-2, c_in (d-1), c_out (d), modes (d+1 .. 2d).
        order = [d - 1, d]
        for j in range(d - 1):
            order += [j, d + 1 + j]
        order.append(2 * d)
        w = w.transpose(order)
        return w.reshape((c_in, c_out) + tuple(2 * m for m in modes[:-1]) + (modes[-1],))


@final
class FNO(eqx.Module):
    """Fourier Neural Operator on a ``d``-dimensional grid, channels last.

    With ``P`` the lifting, ``Q`` the projection, ``K_l`` the spectral
    convolutions and ``W_l`` pointwise linear maps (1x1 convolutions),

        ``v_0 = P(x)``,
        ``v_{l+1} = act(K_l(v_l) + W_l v_l)`` for ``l < L - 1``, and without
        ``act`` for the last layer ``l = L - 1``,
        ``FNO(x) = Q(v_L)``, ``Q = Linear(128 -> c_out) . act . Linear(width -> 128)``,

    as in the reference FNO (its ``fc0``, ``conv/w`` layers and ``fc1``/``fc2``).
    One sample per call: ``jax.vmap`` over a batch.  With zero padding, the
    hidden field is padded with zeros at the end of each grid axis after the
    lifting and cropped back before the projection, so that non-periodic
    axes do not wrap around; without padding the network commutes with
    integer shifts of a periodic grid.

    Args:
        in_channels: input channels (e.g. 3 for ``(t, x, u0)``).
        out_channels: output channels (1 for PI-SC; the ``N`` basis functions
            for PI-HC).
        width: hidden channels of the Fourier layers.
        modes: Fourier modes kept per grid axis; its length is the grid
            dimension ``d``.  At call time ``modes`` must fit the padded grid
            (see :func:`max_modes`).
        n_layers: number of Fourier layers ``L``.
        padding: zeros appended at the end of each grid axis before the
            Fourier layers and cropped after; default none on every axis.
        activation: pointwise nonlinearity (default ``jax.nn.gelu``, which
            uses the tanh approximation; the reference uses exact GELU).
        key: PRNG key for all parameters.
        dtype: parameter dtype, float32 (default) or float64 (needs
            ``jax_enable_x64``).  Inputs are cast to it; so is the output.

    Example:
        >>> fno = FNO(3, 16, width=32, modes=(8, 8), n_layers=4, padding=(0, 8),
        ...           key=jax.random.key(0))
        >>> fno(jnp.zeros((51, 256, 3))).shape
        (51, 256, 16)
        >>> jax.vmap(fno)(jnp.zeros((2, 51, 256, 3))).shape  # a batch
        (2, 51, 256, 16)
    """

    lift: _Pointwise
    spectral: tuple[SpectralConv, ...]
    pointwise: tuple[_Pointwise, ...]
    proj1: _Pointwise
    proj2: _Pointwise
    modes: tuple[int, ...] = eqx.field(static=True)
    padding: tuple[int, ...] = eqx.field(static=True)
    activation: Callable[[Array], Array] = eqx.field(static=True)

    max_modes = staticmethod(max_modes)

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 64,
                 modes: Sequence[int] = (8, 8), n_layers: int = 5,
                 padding: Sequence[int] | None = None,
                 activation: Callable[[Array], Array] = jax.nn.gelu,
                 key: PRNGKeyArray, dtype=jnp.float32):
        dtype = _param_dtype(dtype)
        _check_positive(in_channels=in_channels, out_channels=out_channels, width=width,
                        n_layers=n_layers)
        self.modes = tuple(int(m) for m in modes)
        self.padding = tuple(int(p) for p in padding) if padding is not None else (0,) * len(self.modes)
        if len(self.padding) != len(self.modes):
            raise ValueError(f"padding {self.padding} needs one entry per grid axis (modes {self.modes})")
        if any(p < 0 for p in self.padding):
            raise ValueError(f"padding must be non-negative, got {self.padding}")
        self.lift, self.spectral, self.pointwise, self.proj1, self.proj2 = _init_layers(
            int(in_channels), int(out_channels), int(width), self.modes, int(n_layers), dtype, key)
        self.activation = activation

    @property
    def in_channels(self) -> int:
        return self.lift.weight.shape[0]

    @property
    def out_channels(self) -> int:
        return self.proj2.weight.shape[1]

    @property
    def dtype(self) -> jnp.dtype:
        return self.lift.weight.dtype

    def check(self, grid_shape: Sequence[int]) -> None:
        """Raise ValueError, naming the axis, if the modes do not fit ``grid_shape`` plus padding."""
        grid_shape = tuple(int(n) for n in grid_shape)
        if len(grid_shape) != len(self.modes):
            _check_modes(self.modes, grid_shape)
        padded = tuple(n + p for n, p in zip(grid_shape, self.padding))
        what = f" after padding {self.padding} (grid {grid_shape})" if any(self.padding) else ""
        _check_modes(self.modes, padded, what)

    def __call__(self, x: Float[Array, "*grid c_in"]) -> Float[Array, "*grid c_out"]:
        grid = tuple(x.shape[:-1])
        self.check(grid)
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"FNO expects {self.in_channels} input channels (last axis), got shape {x.shape}")
        v = self.lift(x.astype(self.dtype))
        if any(self.padding):
            v = jnp.pad(v, [(0, p) for p in self.padding] + [(0, 0)])
        for layer, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            v = spectral(v) + pointwise(v)
            if layer < len(self.spectral) - 1:
                v = self.activation(v)
        if any(self.padding):
            v = v[tuple(slice(0, n) for n in grid)]
        return self.proj2(self.activation(self.proj1(v)))


@eqx.filter_jit
def _init_layers(in_channels: int, out_channels: int, width: int, modes: tuple[int, ...],
                 n_layers: int, dtype, key: PRNGKeyArray):
    # One compiled program for all random draws, cached per configuration:
    # eager set-up would compile a sampler for every parameter shape.
    keys = jax.random.split(key, 2 * n_layers + 3)
    lift = _Pointwise(in_channels, width, key=keys[0], dtype=dtype)
    spectral = tuple(SpectralConv(width, width, modes, key=keys[1 + i], dtype=dtype)
                     for i in range(n_layers))
    pointwise = tuple(_Pointwise(width, width, key=keys[1 + n_layers + i], dtype=dtype)
                      for i in range(n_layers))
    proj1 = _Pointwise(width, 128, key=keys[-2], dtype=dtype)
    proj2 = _Pointwise(128, out_channels, key=keys[-1], dtype=dtype)
    return lift, spectral, pointwise, proj1, proj2
