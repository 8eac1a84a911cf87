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


SLAB_GRID = torus_grid(9, 8, 8)  # 8 steps: two slabs of levels 0..4 and 4..8


def test_time_slabs_march_the_exact_discrete_solution_slab_by_slab():
    """``time_slabs=2``: slab 1 starts from slab 0's last level.  Each slab's exact discrete solution
    (BDF2 restarted at BDF1 in each slab) is a column of the basis there, so the march reproduces the
    recurrence run slab by slab, and differs from one solve over all times (one BDF1 start)."""
    pde, nu = Heat2D(viscosity=0.05), 0.05
    u0 = initial_field(SLAB_GRID)
    hc = HardConstraint(pde, SLAB_GRID, SPLITS, 40, row_weights=RowWeights(ridge=0.0), solver=TIGHT,
                        initial_condition="construction", overlap=(0, 2, 2), blend=True, time_slabs=2)
    assert hc.slab_bounds() == ((0, 5), (4, 9))
    first = discrete_heat_solution(u0, torus_grid(5, 8, 8, t_end=0.25), nu)
    second = discrete_heat_solution(first[-1], torus_grid(5, 8, 8, t_end=0.25), nu)
    exact = np.concatenate([first, second[1:]])
    rng = np.random.default_rng(7)
    s = np.linspace(0.0, 1.0, 5)[:, None, None]
    cols = [smooth_field(SLAB_GRID, rng) for _ in range(6)]
    # Column j carries slab j's solution there (u = u(t_a) + s(t) B w); elsewhere it is random.
    cols[0][:5] = np.where(s > 0, (first - u0) / np.where(s > 0, s, 1.0), 0.0)
    cols[1][4:] = np.where(s > 0, (second - first[-1]) / np.where(s > 0, s, 1.0), 0.0)
    out = hc(jnp.asarray(np.stack(cols, -1)), jnp.asarray(u0), jax.random.key(1))
    assert out.weights.shape == (8, 6) and out.points.shape == (8, 40)
    assert np.all(np.asarray(out.solution.status) == RESULTS.successful)
    np.testing.assert_allclose(np.asarray(out.u), exact, rtol=0, atol=1e-10 * np.abs(exact).max())
    one_solve = discrete_heat_solution(u0, SLAB_GRID, nu)
    assert np.abs(one_solve - exact).max() > 1e-4 * np.abs(exact).max()
    # The points are flat indices into the whole grid: slab 1's experts sample levels 5..8.
    t_of = np.unravel_index(np.asarray(out.points), SLAB_GRID.shape)[0]
    assert t_of[:4].min() >= 1 and t_of[:4].max() <= 4 and t_of[4:].min() >= 5


def test_time_slabs_gradient_matches_finite_differences():
    """The gradient through the chain of slabs (each slab's implicit adjoint, and the next slab's
    initial condition made of the slab before's weights) against central differences."""
    b = basis_with(SLAB_GRID, None, seed=6)
    u0 = jnp.asarray(initial_field(SLAB_GRID, seed=1))
    probe = jnp.asarray(np.random.default_rng(2).normal(size=SLAB_GRID.shape))
    hc = HardConstraint(Heat2D(viscosity=0.02, advection=0.5), SLAB_GRID, SPLITS, 40, row_weights=WEIGHTS,
                        solver=LevenbergMarquardt(rtol=1e-12, atol=1e-14, max_steps=200),
                        initial_condition="construction", overlap=(0, 2, 2), blend=True, time_slabs=2)

    @jax.jit
    def loss(bb, uu):
        return jnp.sum(probe * hc(bb, uu, jax.random.key(0)).u)

    assert np.all(np.asarray(hc(b, u0, jax.random.key(0)).solution.status) == RESULTS.successful)
    gb, gu = jax.jit(jax.grad(loss, argnums=(0, 1)))(b, u0)
    eps = 1e-6
    for idx in [(2, 1, 3, 0), (6, 5, 2, 4), (8, 0, 7, 1)]:  # slab 0, slab 1, slab 1's last level
        fd = (loss(b.at[idx].add(eps), u0) - loss(b.at[idx].add(-eps), u0)) / (2 * eps)
        assert abs(gb[idx] - fd) <= 1e-5 * max(abs(fd), 1e-3), (idx, gb[idx], fd)
    for idx in [(0, 0), (3, 6)]:
        fd = (loss(b, u0.at[idx].add(eps)) - loss(b, u0.at[idx].add(-eps))) / (2 * eps)
        assert abs(gu[idx] - fd) <= 1e-5 * max(abs(fd), 1e-3), (idx, gu[idx], fd)
    # Slab 1's level-4 basis value is scaled by s = 0 there, but slab 0 uses it: it has a gradient.
    assert abs(float(gb[4, 1, 1, 2])) > 0


@pytest.mark.parametrize("options, match", [
    (dict(time_slabs=2), "initial_condition='construction'"),
    (dict(time_slabs=9, initial_condition="construction"), "at most 8"),
    (dict(time_slabs=2, initial_condition="construction", splits=(2, 1, 1)), r"splits\[0\] must be 1"),
    (dict(time_slabs=4, initial_condition="construction", n_points=40), "a time slab of 4"),
    (dict(time_slabs=0), "time_slabs must be an integer >= 1"),
])
def test_time_slabs_are_checked_when_the_layer_is_made(options, match):
    kw = dict(splits=SPLITS, n_points=10) | options
    with pytest.raises(ValueError, match=match):
        HardConstraint(Heat2D(), SLAB_GRID, **kw)
