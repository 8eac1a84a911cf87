"""The constraint layer and its experts on a (t, x, y) grid periodic in x and y, splits t1 x x2 x y2.

The PDE is the tests' own (``_heat2d``): the layer, the experts and the
sampler know nothing of it.  References: the exact discrete solution of the
heat equation, scipy's least squares built from the PDE's own methods, and
the generic implicit adjoint.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from _heat2d import Heat2D, discrete_heat_solution, initial_field, smooth_field, torus_grid
from pihc.adjoint import ImplicitAdjoint, StructuredAdjoint
from pihc.constraint import HardConstraint
from pihc.experts import RowWeights
from pihc.least_squares import RESULTS, LevenbergMarquardt
from pihc.partition import blend_windows
from pihc.sampling import sampling_domains

GRID = torus_grid(6, 8, 8)
SPLITS = (1, 2, 2)
WEIGHTS = RowWeights(pde=1.0, initial=1.0, boundary=1.0, ridge=1e-6)
TIGHT = LevenbergMarquardt(rtol=1e-12, atol=1e-14, max_steps=200)


def basis_with(grid, first: np.ndarray | None, n: int = 6, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    cols = [smooth_field(grid, rng) for _ in range(n)]
    if first is not None:
        cols[0] = first
    return jnp.asarray(np.stack(cols, -1))


def test_periodic_blend_windows_wrap_around_the_torus():
    """On a periodic axis the last and first blocks are neighbours: the windows sum to 1, block 1's
    window is block 0's shifted by half the circle, and a hard switch is the blocks' indicators."""
    chi = blend_windows((4, 16, 16), (1, 2, 2), (0, 3, 2), periodic=(False, True, True))
    np.testing.assert_allclose(chi.sum(0), 1.0, rtol=0, atol=1e-15)
    # row-major experts over (x, y): k = 2 * bx + by
    np.testing.assert_allclose(chi[2], np.roll(chi[0], 8, axis=1), atol=1e-15)
    np.testing.assert_allclose(chi[1], np.roll(chi[0], 8, axis=2), atol=1e-15)
    assert chi[0][0, 15, 4] > 0 and chi[0][0, 12, 4] == 0  # reaches 3 points back across the wrap
    np.testing.assert_allclose(chi[0][0, 0, 4] + chi[2][0, 0, 4], 1.0)
    hard = blend_windows((4, 16, 16), (1, 2, 2), (0, 0, 0), periodic=(False, True, True))
    np.testing.assert_array_equal(hard, blend_windows((4, 16, 16), (1, 2, 2), (0, 0, 0)))


def test_periodic_sampling_domains_wrap_around_the_torus():
    mask = np.ones((4, 16, 16), bool)
    dom = sampling_domains(mask, (1, 2, 2), (0, 2, 0), periodic=(False, True, True)).reshape(4, 4, 16, 16)
    x_of_0 = np.flatnonzero(dom[0].any(axis=(0, 2)))
    np.testing.assert_array_equal(x_of_0, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15])
    clipped = sampling_domains(mask, (1, 2, 2), (0, 2, 0)).reshape(4, 4, 16, 16)
    np.testing.assert_array_equal(np.flatnonzero(clipped[0].any(axis=(0, 2))), np.arange(10))


@pytest.mark.parametrize("options", [dict(splits=(1, 1, 1)), dict(splits=SPLITS, overlap=(0, 2, 2), blend=True),
                                     dict(splits=SPLITS, initial_condition="construction")])
def test_a_basis_holding_the_exact_discrete_solution_is_recovered(options):
    """The heat equation's exact discrete solution is one basis column among random smooth ones: every
    expert (hard switch or blended) finds it, so u equals it to round-off."""
    pde = Heat2D(viscosity=0.05)
    u0 = initial_field(GRID)
    exact = discrete_heat_solution(u0, GRID, 0.05)
    hc = HardConstraint(pde, GRID, n_points=60, row_weights=RowWeights(ridge=0.0), solver=TIGHT, **options)
    column = exact
    if hc.initial_condition == "construction":  # u = u0 + (t / T) B w: the column that gives the solution
        s = np.linspace(0.0, 1.0, GRID.shape[0])[:, None, None]
        column = np.where(s > 0, (exact - u0) / np.where(s > 0, s, 1.0), 0.0)
    out = hc(basis_with(GRID, column), jnp.asarray(u0), jax.random.key(1))
    assert np.all(np.asarray(out.solution.status) == RESULTS.successful)
    np.testing.assert_allclose(np.asarray(out.u), exact, rtol=0, atol=1e-10 * np.abs(exact).max())
    assert np.abs(exact[-1] - exact[0]).max() > 0.1 * np.abs(exact).max()  # it does decay: not the IC again


def _scipy_expert(hc, basis, u0, points, k):
    """Expert k's problem built from the PDE's own methods (no linearisation), solved by scipy."""
    pde, wt = hc.pde, hc.row_weights
    flat = np.asarray(points[k])

    @jax.jit
    def r(w):
        u = basis @ w
        res = pde.residual(pde.terms(u, GRID)).ravel()[flat]
        ic = pde.initial_rows(u, u0, GRID)
        return jnp.concatenate([np.sqrt(wt.pde / len(flat)) * res, np.sqrt(wt.initial / ic.size) * ic, wt.ridge * w])

    return scipy.optimize.least_squares(lambda w: np.asarray(r(jnp.asarray(w))), np.zeros(basis.shape[-1]),
                                        xtol=1e-15, ftol=1e-15, gtol=1e-15).x


@pytest.mark.parametrize("splits", [(1, 1, 1), SPLITS])
def test_nonlinear_experts_converge_to_scipys_minimiser(splits):
    """With advection the residual is quadratic in the terms; PI-HC and the t1 x x2 x y2 experts
    converge, and each expert's weights are scipy's from the same points."""
    pde = Heat2D(viscosity=0.02, advection=0.5)
    u0 = jnp.asarray(initial_field(GRID, seed=3))
    b = basis_with(GRID, None, seed=4)
    hc = HardConstraint(pde, GRID, splits, 50, row_weights=WEIGHTS, solver=TIGHT)
    out = hc(b, u0, jax.random.key(2))
    assert np.all(np.asarray(out.solution.status) == RESULTS.successful)
    assert out.weights.shape == (int(np.prod(splits)), 6)
    for k in range(out.weights.shape[0]):
        ref = _scipy_expert(hc, b, u0, out.points, k)
        np.testing.assert_allclose(out.weights[k], ref, rtol=1e-6, atol=1e-7 * np.abs(ref).max())
    if len(out.weights) > 1:
        assert np.abs(np.asarray(out.weights[0] - out.weights[3])).max() > 1e-4  # the experts do differ


@pytest.mark.parametrize("options", [dict(), dict(initial_condition="construction", overlap=(0, 2, 2), blend=True,
                                                 row_scope="local")])
def test_structured_adjoint_equals_the_generic_implicit_adjoint_on_the_torus(options):
    """Gradients in the basis, u0 and the viscosity, t1 x x2 x y2 experts on the nonlinear problem."""
    b = basis_with(GRID, None, seed=6)
    u0 = jnp.asarray(initial_field(GRID, seed=1))
    probe = jnp.asarray(np.random.default_rng(2).normal(size=GRID.shape))

    def loss(bb, uu, nu, adjoint):
        hc = HardConstraint(Heat2D(viscosity=nu, advection=0.5), GRID, SPLITS, 40, row_weights=WEIGHTS,
                            adjoint=adjoint, solver=LevenbergMarquardt(rtol=1e-10, atol=1e-14, max_steps=200),
                            **options)
        out = hc(bb, uu, jax.random.key(0))
        return jnp.sum(probe * out.u), out.solution.status

    nu = jnp.asarray(0.02)
    grad = eqx.filter_jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, status), g = grad(b, u0, nu, StructuredAdjoint())
    assert np.all(np.asarray(status) == RESULTS.successful)
    _, ref = grad(b, u0, nu, ImplicitAdjoint())
    for got, want in zip(g, ref):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())
    assert np.abs(np.asarray(g[2])) > 0
