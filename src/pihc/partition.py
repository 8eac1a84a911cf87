"""Partition of a grid into a product of equal blocks (the MoE router).

``partition(x, splits)`` cuts ``x`` of shape ``(*grid, *channels)`` into
``prod(splits)`` blocks, ``splits[d]`` along grid axis ``d``; the experts are
numbered in row-major order of their block coordinates.  ``unpartition`` is
its inverse.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .grid import GridError

__all__ = ["partition", "unpartition", "check_splits", "block_shape"]


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


def partition(x: Array, splits: Sequence[int], names: Sequence[str] | None = None) -> Array:
    """``(*grid, *channels) -> (prod(splits), *block, *channels)``, row-major experts."""
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


def unpartition(blocks: Array, splits: Sequence[int]) -> Array:
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
