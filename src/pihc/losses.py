"""The physics loss on the full grid: PDE residual plus initial/boundary rows."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .grid import Grid
from .pdes.base import PDE

__all__ = ["LossWeights", "physics_loss"]


class LossWeights(eqx.Module):
    r"""Weights of the training loss ``pde * MSE(F) + initial * MSE(ic) + boundary * MSE(bc)``.

    ``causal`` (``epsilon``, default 0: off) weighs the PDE part's time
    levels causally (Wang, Sankaran and Perdikaris, "Respecting causality is
    all you need for training physics-informed neural networks", 2022):

    .. math::  \mathrm{MSE}(F) 	o rac{1}{N} \sum_i W_i\, n_i L_i, \qquad
               W_i = \exp\Big(-\epsilon \sum_{k<i} L_k\Big),

    with ``L_i`` the mean squared residual on time level ``i`` (``n_i``
    points of the residual domain, ``N`` in all).  ``W`` is held constant in
    the gradient, so a level's residual drives the training once the levels
    before it fit: an error at early times is carried to every later one.
    """

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0
    causal: float = 0.0


def physics_loss(pde: PDE, u: Float[Array, "*grid"], u0: Float[Array, "*space"], grid: Grid,
                 weights: LossWeights = LossWeights()) -> tuple[Float[Array, ""], dict]:
    """Weighted mean-squared residuals of ``u`` on the whole grid.

    Returns ``(loss, parts)`` with ``parts = {"pde", "initial", "boundary"}``,
    the unweighted mean squares (the PDE part over ``pde.residual_domain``;
    without the causal weights of ``weights.causal``, which enter ``loss`` only).
    """
    mask = np.asarray(pde.residual_domain(grid), bool)
    r = pde.residual(pde.terms(u, grid))
    pde_ms = jnp.sum(jnp.where(mask, r, 0.0) ** 2) / int(np.count_nonzero(mask))  # a Python int: no int64 promotion
    ic_ms = jnp.mean(pde.initial_rows(u, u0, grid) ** 2)
    bc = pde.boundary_rows(u, grid)
    bc_ms = jnp.mean(bc ** 2) if bc.size else jnp.zeros((), u.dtype)
    pde_term = pde_ms
    if weights.causal:
        sq = jnp.where(mask, r, 0.0) ** 2
        space = tuple(range(1, sq.ndim))
        n_t = mask.sum(axis=space)  # residual points per time level
        L_t = jnp.sum(sq, axis=space) / jnp.asarray(np.maximum(n_t, 1), sq.dtype)
        W = jax.lax.stop_gradient(jnp.exp(-weights.causal * (jnp.cumsum(L_t) - L_t)))
        pde_term = jnp.sum(W * L_t * jnp.asarray(n_t, sq.dtype)) / int(np.count_nonzero(mask))
    loss = weights.pde * pde_term + weights.initial * ic_ms + weights.boundary * bc_ms
    return loss, {"pde": pde_ms, "initial": ic_ms, "boundary": bc_ms}
