"""Partition of a grid into a product of equal blocks (the MoE router).

``partition(x, splits)`` cuts ``x`` of shape ``(*grid, *channels)`` into
``prod(splits)`` blocks, ``splits[d]`` along grid axis ``d``; the experts are
numbered in row-major order of their block coordinates.  ``unpartition`` is
its inverse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .grid import GridError

__all__ = ["partition", "unpartition", "check_splits", "block_shape", "blend_windows"]


def check_splits(grid_shape: Sequence[int], splits: Sequence[int],
                 names: Sequence[str] | None = None) -> tuple[int, ...]:
    """Validate ``splits`` against ``grid_shape``; return the block shape."""
    grid_shape, splits = tuple(grid_shape), tuple(int(s) for s in splits)
    names = tuple(names) if names is not None else tuple(f"axis {d}" for d in range(len(grid_shape)))
    if len(splits) != len(grid_shape):
        raise GridError(f"splits {splits} must give one count per grid axis {names} (grid shape {grid_shape})")
    for n, s, name in zip(grid_shape, splits, names):
        if s < 1:
            raise GridError(f"axis {name}: the number of experts must be >= 1, got {s}")
        if n % s:
            raise GridError(f"axis {name} has {n} points; {s} experts do not divide it"
                            f" (choose a divisor of {n})")
    return tuple(n // s for n, s in zip(grid_shape, splits))


def block_shape(grid_shape: Sequence[int], splits: Sequence[int]) -> tuple[int, ...]:
    return check_splits(grid_shape, splits)


def partition(x: Array | np.ndarray, splits: Sequence[int],
              names: Sequence[str] | None = None) -> Array | np.ndarray:
    """``(*grid, *channels) -> (prod(splits), *block, *channels)``, row-major experts (NumPy in, NumPy out)."""
    splits = tuple(splits)
    d = len(splits)
    if x.ndim < d:
        raise GridError(f"array of rank {x.ndim} has fewer axes than splits {splits}")
    grid, channels = x.shape[:d], x.shape[d:]
    block = check_splits(grid, splits, names)
    y = x.reshape(sum(((s, b) for s, b in zip(splits, block)), ()) + channels)
    perm = tuple(range(0, 2 * d, 2)) + tuple(range(1, 2 * d, 2)) + tuple(range(2 * d, y.ndim))
    xp = np if isinstance(x, np.ndarray) else jnp  # static masks stay numpy
    return xp.transpose(y, perm).reshape((math.prod(splits),) + block + channels)


def unpartition(blocks: Array | np.ndarray, splits: Sequence[int]) -> Array | np.ndarray:
    """Inverse of :func:`partition`: ``(prod(splits), *block, *ch) -> (*grid, *ch)``."""
    splits = tuple(splits)
    d = len(splits)
    if blocks.shape[0] != math.prod(splits):
        raise GridError(f"{blocks.shape[0]} blocks given, splits {splits} need {math.prod(splits)}")
    block, channels = blocks.shape[1:1 + d], blocks.shape[1 + d:]
    y = blocks.reshape(splits + block + channels)
    perm = sum(((i, d + i) for i in range(d)), ()) + tuple(range(2 * d, y.ndim))
    xp = np if isinstance(blocks, np.ndarray) else jnp
    return xp.transpose(y, perm).reshape(tuple(s * b for s, b in zip(splits, block)) + channels)


def _periodic_flags(periodic: Sequence[bool] | None, grid_shape: tuple[int, ...]) -> tuple[bool, ...]:
    flags = (False,) * len(grid_shape) if periodic is None else tuple(bool(p) for p in periodic)
    if len(flags) != len(grid_shape):
        raise GridError(f"periodic {flags} must give one flag per grid axis (grid shape {grid_shape})")
    return flags


def _periodic_windows(i: np.ndarray, s: int, b: int, h: int) -> np.ndarray:
    """(s, n): the windows of ``s`` blocks of ``b`` points on a circle of ``n = s b`` points.

    Block ``j`` spans the seams at ``j b - 1/2`` and ``(j + 1) b - 1/2``.  A
    point's position is taken relative to the block's centre on the circle,
    in ``[-n/2, n/2)``, so each block ramps up across its left seam and down
    across its right one even when, for ``s = 2``, both seams face the same
    neighbour.  The ramps match those of a non-periodic axis.
    """
    n = s * b
    out = np.empty((s, len(i)))
    for j in range(s):
        p = np.mod(i - (j * b + 0.5 * b - 0.5) + 0.5 * n, n) - 0.5 * n  # relative to the block's centre
        left, right = p + 0.5 * b, p - 0.5 * b  # signed distances past the left and right seams
        if h == 0:
            out[j] = (left > 0).astype(np.float64) * (1.0 - (right > 0).astype(np.float64))
        else:
            out[j] = _smoothstep((left + h) / (2.0 * h)) * (1.0 - _smoothstep((right + h) / (2.0 * h)))
    return out


def _smoothstep(y: np.ndarray) -> np.ndarray:
    """The quintic ramp 6y^5 - 15y^4 + 10y^3 on [0, 1], clipped: 0 -> 1 with zero first and
    second derivatives at both ends, and ``S(y) + S(1 - y) = 1``."""
    y = np.clip(y, 0.0, 1.0)
    return y ** 3 * (10.0 + y * (-15.0 + 6.0 * y))


def blend_windows(grid_shape: Sequence[int], splits: Sequence[int], halo: Sequence[int],
                  periodic: Sequence[bool] | None = None) -> np.ndarray:
    """A smooth partition of unity over the blocks: ``(prod(splits), *grid)``, summing to 1.

    Along an axis with ``s`` blocks of ``b`` points, the seam between blocks
    ``j - 1`` and ``j`` lies half-way between points ``j b - 1`` and ``j b``.
    Within ``halo`` points of it the left block's window falls and the right
    block's rises as ``1 - S`` and ``S`` (:func:`_smoothstep` of the
    distance, scaled to the halo), so the two sum to 1 and join their
    plateaus with continuous first and second derivatives.  Block ``k``'s
    window is the product of its per-axis windows: 1 in its block away from
    the seams, > 0 exactly on the block widened by ``halo`` (what
    ``HardConstraint(overlap=halo)`` samples), 0 beyond.  ``halo = 0`` gives
    the blocks' indicators (:func:`partition`'s split).

    On a ``periodic`` axis split in ``s >= 2`` blocks the last and the first
    block are neighbours too: the seam half-way between points ``n - 1`` and
    ``0`` is ramped like the others, with the distance measured around the
    circle, so block 0's window also reaches ``halo`` points back from
    ``n - 1`` (where the experts sample, :func:`~pihc.sampling.sampling_domains`).

    Raises:
        GridError: the splits do not divide the grid, or a halo is negative
            or wider than half a block along a split axis (the ramps of a
            block's two seams would overlap).
    """
    grid_shape, splits, halo = tuple(grid_shape), tuple(splits), tuple(int(h) for h in halo)
    periodic = _periodic_flags(periodic, grid_shape)
    block = check_splits(grid_shape, splits)
    if len(halo) != len(grid_shape):
        raise GridError(f"halo {halo} must give one width per grid axis (grid shape {grid_shape})")
    per_axis = []
    for d, (n, s, b, h, wrap) in enumerate(zip(grid_shape, splits, block, halo, periodic)):
        if h < 0 or (s > 1 and 2 * h > b):
            raise GridError(f"axis {d}: a blending halo of {h} points needs 0 <= halo <= {b // 2}"
                            f" (half a block of {b} points)")
        i = np.arange(n, dtype=np.float64)
        w = np.ones((s, n))
        if wrap and s > 1:
            per_axis.append(_periodic_windows(i, s, b, h))
            continue
        for j in range(1, s):  # the seam between blocks j - 1 and j
            c = j * b - 0.5
            rise = (i > c).astype(np.float64) if h == 0 else _smoothstep((i - c + h) / (2.0 * h))
            w[j] *= rise
            w[j - 1] *= 1.0 - rise
        per_axis.append(w)
    out = np.ones((math.prod(splits),) + grid_shape)
    for k, coords in enumerate(np.ndindex(*splits)):
        for d, c in enumerate(coords):
            shape = [1] * len(grid_shape)
            shape[d] = grid_shape[d]
            out[k] = out[k] * per_axis[d][c].reshape(shape)
    return out
