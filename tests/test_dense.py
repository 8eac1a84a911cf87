"""pihc.dense: small solves that agree with NumPy's at every vmap depth and never batch a LAPACK call."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.dense import solve, solve_spd, solve_sym


def _systems(shape, n, spd, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal(shape + (n, n))
    A = M @ np.swapaxes(M, -1, -2) + n * np.eye(n) if spd else M + n * np.eye(n)
    return A, rng.standard_normal(shape + (n,))


def _indefinite(shape, n, seed=0):
    """Symmetric matrices with eigenvalues of both signs, none near 0 (Cholesky fails on each)."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal(shape + (n, n)))[0]
    lam = np.linspace(1.0, 2.0, n) * np.where(np.arange(n) % 2, -1.0, 1.0)
    A = Q @ (lam[:, None] * np.swapaxes(Q, -1, -2))
    return A, rng.standard_normal(shape + (n,))


@pytest.mark.parametrize("fn,spd", [(solve, False), (solve_spd, True), (solve_sym, True), (solve_sym, "indefinite")])
@pytest.mark.parametrize("shape", [(), (3,), (2, 3)])
def test_matches_numpy_at_every_vmap_depth(fn, spd, shape):
    """``solve_sym`` on positive definite matrices (Cholesky) and on indefinite ones (its LU branch)."""
    A, b = _indefinite(shape, 7) if spd == "indefinite" else _systems(shape, 7, spd)
    f = fn
    for _ in shape:
        f = jax.vmap(f)
    x = np.asarray(jax.jit(f)(jnp.asarray(A), jnp.asarray(b)))
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12, atol=1e-12)


def test_a_shared_matrix_broadcasts_over_the_batch():
    A, b = _systems((4,), 5, spd=True)
    x = jax.vmap(solve_spd, in_axes=(None, 0))(jnp.asarray(A[0]), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A[0], b.T).T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn,spd", [(solve, False), (solve_spd, True), (solve_sym, True)])
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


def test_solve_sym_picks_its_factorisation_per_matrix_of_a_batch():
    """A batch of one positive definite and one indefinite matrix: each is solved (the branch is taken per
    matrix, so the indefinite one does not turn its neighbour's Cholesky solution into LU's or NaN)."""
    A_pd, b_pd = _systems((), 6, spd=True)
    A_in, b_in = _indefinite((), 6, seed=1)
    A, b = np.stack([A_pd, A_in]), np.stack([b_pd, b_in])
    assert not np.all(np.isfinite(np.asarray(jax.vmap(solve_spd)(jnp.asarray(A), jnp.asarray(b)))[1]))
    x = np.asarray(jax.jit(jax.vmap(solve_sym))(jnp.asarray(A), jnp.asarray(b)))
    np.testing.assert_allclose(x, np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-12, atol=1e-12)
