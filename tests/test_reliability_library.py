"""The library refuses inputs of the wrong shape by name, before any compute."""

import jax
import jax.numpy as jnp
import pytest

from pihc import FNO, PIHC, DiffusionSorption, GridError, HardConstraint, diffusion_sorption_grid


def test_an_initial_condition_of_the_wrong_length_is_refused_by_name():
    grid = diffusion_sorption_grid(nt=9, nx=32)
    layer = HardConstraint(DiffusionSorption(), grid, splits=(1, 2), n_points=40)
    basis = jax.random.normal(jax.random.key(1), (9, 32, 4))
    with pytest.raises(GridError, match=r"u0 has shape \(31,\); the grid \('t', 'x'\) needs \(32,\)"):
        layer(basis, jnp.zeros(31), jax.random.key(0))
    with pytest.raises(GridError, match=r"u0 has shape \(9, 32\)"):
        layer(basis, jnp.zeros((9, 32)), jax.random.key(0))
    one = HardConstraint(DiffusionSorption(), grid, splits=(1, 1), n_points=40)
    model = PIHC(FNO(3, 4, width=4, modes=(3, 4), n_layers=1, key=jax.random.key(2)), one)
    with pytest.raises(ValueError, match=r"u0 has shape \(31,\)"):
        model(jnp.zeros(31), jax.random.key(0))
