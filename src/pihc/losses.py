"""The physics loss on the full grid: PDE residual plus initial/boundary rows."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .grid import Grid
from .pdes.base import PDE

__all__ = ["LossWeights", "physics_loss"]


class LossWeights(eqx.Module):
    """Weights of the training loss ``pde * MSE(F) + initial * MSE(ic) + boundary * MSE(bc)``."""

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0


def physics_loss(pde: PDE, u: Float[Array, "*grid"], u0: Float[Array, "*space"], grid: Grid,
                 weights: LossWeights = LossWeights()) -> tuple[Float[Array, ""], dict]:
    """Weighted mean-squared residuals of ``u`` on the whole grid.

    Returns ``(loss, parts)`` with ``parts = {"pde", "initial", "boundary"}``,
    the unweighted mean squares (the PDE part over ``pde.residual_domain``).
    """
    mask = np.asarray(pde.residual_domain(grid), bool)
    r = pde.residual(pde.terms(u, grid))
    pde_ms = jnp.sum(jnp.where(mask, r, 0.0) ** 2) / int(np.count_nonzero(mask))  # a Python int: no int64 promotion
    ic_ms = jnp.mean(pde.initial_rows(u, u0, grid) ** 2)
    bc = pde.boundary_rows(u, grid)
    bc_ms = jnp.mean(bc ** 2) if bc.size else jnp.zeros((), u.dtype)
    loss = weights.pde * pde_ms + weights.initial * ic_ms + weights.boundary * bc_ms
    return loss, {"pde": pde_ms, "initial": ic_ms, "boundary": bc_ms}
