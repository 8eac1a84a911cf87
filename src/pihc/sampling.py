"""Where each expert fits its PDE: uniform samples of residual points without replacement."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

__all__ = ["PointSampler", "largest", "sampling_domains"]


def sampling_domains(residual_domain: np.ndarray, splits: Sequence[int],
                     overlap: Sequence[int] | None = None, periodic: Sequence[bool] | None = None
                     ) -> np.ndarray:
    """(K, G) bool over the flattened grid: where expert k samples its points.

    Block k (row-major block coordinates, as :func:`~pihc.partition.partition`
    numbers them), widened by ``overlap`` points per axis, intersected with
    the PDE's ``residual_domain`` (a ``grid.shape`` mask).  The widened block
    is clipped to the grid, except along ``periodic`` axes, where it wraps
    around (the first and last blocks are neighbours there).
    """
    mask = np.asarray(residual_domain, bool)
    shape = mask.shape
    block = [n // s for n, s in zip(shape, splits)]
    halo = tuple(overlap) if overlap is not None else (0,) * len(shape)
    wrap = tuple(periodic) if periodic is not None else (False,) * len(shape)
    out = np.zeros((math.prod(splits), mask.size), bool)
    for k, coords in enumerate(np.ndindex(*splits)):
        region = np.ones(shape, bool)
        for d, (c, b, h, n, p) in enumerate(zip(coords, block, halo, shape, wrap)):
            i = np.arange(c * b - h, (c + 1) * b + h)
            on = np.zeros(n, bool)
            on[i % n if p else i[(i >= 0) & (i < n)]] = True
            region &= on.reshape((1,) * d + (n,) + (1,) * (len(shape) - d - 1))
        out[k] = (region & mask).ravel()
    return out


class PointSampler:
    """``n_points`` distinct flat grid indices per expert, uniform over its domain, in grid order.

    The points are those of the ``n_points`` largest of i.i.d. uniform
    scores, one per domain point: a uniform sample without replacement.
    Scores are drawn per domain point (not per grid point) and in float32.
    The selection is :func:`largest`'s threshold search, the same points as
    ``lax.top_k`` (ties broken towards the lower index) without a sort.

    Args:
        domains: (K, G) bool, each expert's domain over the flattened grid
            (:func:`sampling_domains`).
        n_points: points per expert; at most the smallest domain's size.
    """

    def __init__(self, domains: np.ndarray, n_points: int):
        counts = domains.sum(axis=1)
        if n_points > counts.min():
            k = int(counts.argmin())
            raise ValueError(f"{n_points} points per expert requested, but expert {k}'s sampling region"
                             f" holds only {int(counts.min())} points of the residual domain;"
                             f" ask for at most {int(counts.min())}")
        self.n_points = n_points
        # (K, n_max) flat indices of each expert's domain points, padded, and their mask.
        self.candidates = np.zeros((domains.shape[0], int(counts.max())), np.int32)
        self.valid = np.zeros(self.candidates.shape, bool)
        for k, d in enumerate(domains):
            self.candidates[k, :counts[k]] = np.flatnonzero(d)
            self.valid[k, :counts[k]] = True

    def sample(self, key: PRNGKeyArray) -> Int[Array, "K m"]:
        scores = jax.random.uniform(key, self.candidates.shape, jnp.float32)
        return jax.vmap(lambda s, v, c: largest(s, v, c, self.n_points))(
            scores, jnp.asarray(self.valid), jnp.asarray(self.candidates))


def largest(scores: Float[Array, " n"], valid: Bool[Array, " n"], items: Int[Array, " n"], m: int
            ) -> Int[Array, " m"]:
    """``items`` at the ``m`` largest valid ``scores`` (in ``[0, 1)``), in their order in ``items``.

    The same selection as ``lax.top_k(where(valid, scores, -1), m)``, ties
    included (the lower index wins), found without sorting: non-negative
    float32 values order as their int32 bit patterns, so a 30-step
    bisection over the integers below ``bits(1.0)`` finds the ``m``-th
    largest key ``t``; every key above ``t`` is taken, and of the keys equal
    to ``t`` the first ones.  XLA's CPU ``top_k`` is a partial sort per row,
    costlier for the experts' few thousand scores (commit bc3368a,
    docs/benchmarks.md).
    """
    keys = jnp.where(valid, jax.lax.bitcast_convert_type(scores, jnp.int32), -1)

    def halve(_, bounds):  # invariant: count(keys >= lo) >= m > count(keys >= hi + 1)
        lo, hi = bounds
        mid = lo + (hi - lo + 1) // 2
        ok = jnp.sum(keys >= mid) >= m
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    one = np.int32(np.float32(1.0).view(np.int32))  # 2^30 > one: 30 halvings pin t
    t, _ = jax.lax.fori_loop(0, 30, halve, (jnp.int32(0), jnp.int32(one)))
    above = keys > t
    at = keys == t
    take = above | (at & (jnp.cumsum(at) <= m - jnp.sum(above)))
    slot = jnp.where(take, jnp.cumsum(take) - 1, m)  # m: dropped
    return jnp.zeros(m, items.dtype).at[slot].set(items, mode="drop")
