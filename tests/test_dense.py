"""pihc.dense: small solves that agree with NumPy's at every vmap depth and never batch a LAPACK call."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.dense import solve, solve_spd


def _systems(shape, n, spd, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal(shape + (n, n))
    A = M @ np.swapaxes(M, -1, -2) + n * np.eye(n) if spd else M + n * np.eye(n)
    return A, rng.standard_normal(shape + (n,))


@pytest.mark.parametrize("fn,spd", [(solve, False), (solve_spd, True)])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_matches_numpy_at_every_vmap_depth(fn, spd, shape):
    A, b = _systems(shape, 7, spd)
    f = fn
    for _ in shape:
        f = jax.vmap(f)
    x = np.asarray(jax.jit(f)(jnp.asarray(A), jnp.asarray(b)))
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12, atol=1e-12)


def test_a_shared_matrix_broadcasts_over_the_batch():
    A, b = _systems((4,), 5, spd=True)
    x = jax.vmap(solve_spd, in_axes=(None, 0))(jnp.asarray(A[0]), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A[0], b.T).T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn,spd", [(solve, False), (solve_spd, True)])
def test_each_lapack_call_holds_one_matrix(fn, spd):
    """Under two vmaps the compiled program's LAPACK calls take (n, n) operands, not (2, 3, n, n):
    jaxlib's CPU kernels split a batched call over the intra-op pool and block on it (pihc.dense)."""
    A, b = _systems((2, 3), 6, spd)
    hlo = jax.jit(jax.vmap(jax.vmap(fn))).lower(jnp.asarray(A), jnp.asarray(b)).compile().as_text()
    calls = [line for line in hlo.splitlines() if "custom-call(" in line and "lapack" in line]
    assert calls, "no LAPACK call found: the test no longer looks at what it should"
    for line in calls:
        shapes = re.findall(r"f64\[([\d,]*)\]", line.split("custom-call(")[1])
        assert all(s.count(",") <= 1 for s in shapes), line
