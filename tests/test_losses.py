"""The physics loss's causal weighting of time levels, against a direct evaluation of its formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.losses import LossWeights, physics_loss
from pihc.pdes.navier_stokes import NavierStokes2D, navier_stokes_grid
from pihc.training.config import ConfigError, load_config


def _field():
    grid = navier_stokes_grid(7, 8, 8)
    t, x, y = np.meshgrid(*(a.coords for a in grid.axes), indexing="ij")
    u = np.sin(2 * np.pi * x) * np.cos(2 * np.pi * y) * (1 + t) ** 2 + 0.3 * np.cos(4 * np.pi * (x + y)) * t
    return NavierStokes2D(viscosity=1e-2), grid, jnp.asarray(u)


def test_causal_weights_are_exp_minus_eps_times_the_earlier_levels_residual_and_carry_no_gradient():
    pde, grid, u = _field()
    eps = 3.0
    mask = pde.residual_domain(grid)
    r = np.asarray(pde.residual(pde.terms(u, grid)))
    L = np.array([np.mean(r[i][mask[i]] ** 2) if mask[i].any() else 0.0 for i in range(grid.shape[0])])
    W = np.exp(-eps * (np.cumsum(L) - L))  # level i: the residual of levels 0 .. i-1
    n = mask.reshape(grid.shape[0], -1).sum(1)
    want = np.sum(W * L * n) / mask.sum()
    loss, parts = physics_loss(pde, u, u[0], grid, LossWeights(causal=eps))
    np.testing.assert_allclose(float(loss), want, rtol=1e-12)
    assert W[-1] < 0.5 * W[1]  # the weighting is not trivial on this field
    # parts["pde"] stays the plain mean square; eps = 0 is the plain loss.
    np.testing.assert_allclose(float(parts["pde"]), np.sum(L * n) / mask.sum(), rtol=1e-12)
    np.testing.assert_allclose(float(physics_loss(pde, u, u[0], grid)[0]), float(parts["pde"]), rtol=1e-12)
    # The weights are constants in the gradient: it is that of sum_i W_i L_i n_i / N with W held fixed.
    Wj = jnp.asarray(W)

    def fixed(v):
        rr = pde.residual(pde.terms(v, grid))
        Lv = jnp.stack([jnp.sum(jnp.where(mask[i], rr[i], 0.0) ** 2) / float(max(n[i], 1))
                        for i in range(grid.shape[0])])
        return jnp.sum(Wj * Lv * jnp.asarray(n, Lv.dtype)) / float(mask.sum())

    g = jax.grad(lambda v: physics_loss(pde, v, u[0], grid, LossWeights(causal=eps))[0])(u)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(fixed)(u)), rtol=1e-10, atol=1e-14)


def test_a_negative_causal_weight_is_refused_when_the_config_is_loaded():
    with pytest.raises(ConfigError, match="loss.causal must be >= 0"):
        load_config("navier-stokes/moe-small", ["loss.causal=-1"])
    assert load_config("navier-stokes/moe-small", ["loss.causal=20"]).loss.causal == 20.0
