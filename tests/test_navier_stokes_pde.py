"""NavierStokes2D against analytic fields: spectral terms, Taylor-Green decay, a forced steady state."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from pihc import HardConstraint, LevenbergMarquardt, NavierStokes2D, RowWeights, navier_stokes_grid
from pihc.adjoint import ImplicitAdjoint, StructuredAdjoint
from pihc.grid import Axis, Grid, GridError
from pihc.least_squares import RESULTS

TAU = 2.0 * np.pi
STENCILS = [("midpoint", 2), ("backward", 1), ("backward", 2), ("central", 2), ("central", 4)]


def modes(grid, t_factor=None):
    """w = T(t) [cos(2 pi x) + 0.5 sin(4 pi y) + 0.3 sin(2 pi (x + 3 y))] with its analytic derivatives."""
    m = grid.mesh()
    t, x, y = m[..., 0], m[..., 1], m[..., 2]
    T = np.ones_like(t) if t_factor is None else t_factor(t)
    a, b, c = np.cos(TAU * x), 0.5 * np.sin(2 * TAU * y), 0.3 * np.sin(TAU * (x + 3 * y))
    w = a + b + c
    w_x = -TAU * np.sin(TAU * x) + 0.3 * TAU * np.cos(TAU * (x + 3 * y))
    w_y = 0.5 * 2 * TAU * np.cos(2 * TAU * y) + 0.9 * TAU * np.cos(TAU * (x + 3 * y))
    # psi = sum of each mode over |k|^2; u = psi_y, v = -psi_x.
    psi_y = 0.5 * 2 * TAU * np.cos(2 * TAU * y) / (2 * TAU) ** 2 + 0.9 * TAU * np.cos(TAU * (x + 3 * y)) / (10 * TAU**2)
    psi_x = -TAU * np.sin(TAU * x) / TAU**2 + 0.3 * TAU * np.cos(TAU * (x + 3 * y)) / (10 * TAU**2)
    lap = -TAU**2 * a - (2 * TAU) ** 2 * b - 10 * TAU**2 * c
    return {k: T * v for k, v in dict(w=w, w_x=w_x, w_y=w_y, u=psi_y, v=-psi_x, lap_w=lap).items()}


def taylor_green(grid, nu, m=1):
    """w = sin(2 pi m x) sin(2 pi m y) exp(-2 nu (2 pi m)^2 t): an exact solution with u . grad w = 0."""
    g = grid.mesh()
    k = TAU * m
    return np.sin(k * g[..., 1]) * np.sin(k * g[..., 2]) * np.exp(-2 * nu * k**2 * g[..., 0])


def test_terms_are_affine():
    grid = navier_stokes_grid(5, 8, 12, 1.0)
    rng = np.random.default_rng(0)
    forcing = jnp.asarray(rng.normal(size=(8, 12)))
    for pde in (NavierStokes2D(), NavierStokes2D(forcing=forcing)):
        u1, u2 = (jnp.asarray(rng.normal(size=grid.shape)) for _ in range(2))
        T = lambda u: pde.terms(u, grid)  # noqa: E731
        zero = T(jnp.zeros(grid.shape))
        np.testing.assert_allclose(T(2.0 * u1 - 3.0 * u2) - zero, 2.0 * (T(u1) - zero) - 3.0 * (T(u2) - zero),
                                   atol=1e-11)
    # The forcing is the constant part, of the linear term L = w_t - nu lap w - f alone.
    np.testing.assert_array_equal(zero[..., 0], -np.broadcast_to(forcing, grid.shape))
    np.testing.assert_array_equal(zero[..., 1:], 0.0)


@pytest.mark.parametrize("nx,ny", [(16, 16), (12, 20), (9, 15)])
def test_spectral_terms_are_exact_on_trigonometric_polynomials(nx, ny):
    grid = navier_stokes_grid(4, nx, ny, 1.0)
    ref = modes(grid)
    nu = 0.03
    pde = NavierStokes2D(viscosity=nu, time_stencil="central")  # the spatial terms at the grid's own times
    terms = pde.terms(jnp.asarray(ref["w"]) + 0.7, grid)  # a mean does not move the flow
    # Constant in time: w_t = 0, so the linear term is -nu lap w.
    expected = {"w_t - nu lap_w": -nu * ref["lap_w"], **{k: ref[k] for k in ("w_x", "w_y", "u", "v")}}
    assert pde.term_names == tuple(expected)
    for i, name in enumerate(pde.term_names):
        np.testing.assert_allclose(terms[..., i], expected[name], atol=1e-11, err_msg=name)


def test_forced_steady_state_has_zero_residual():
    """w_s with f = u_s . grad w_s - nu lap w_s is an exact steady solution; its nonlinear term is not 0."""
    nu = 1e-3
    grid = navier_stokes_grid(6, 16, 16, 1.0)
    ref = modes(grid)
    nonlinear = ref["u"] * ref["w_x"] + ref["v"] * ref["w_y"]
    assert np.abs(nonlinear).max() > 0.1
    forcing = (nonlinear - nu * ref["lap_w"])[0]
    for stencil, order in STENCILS:
        pde = NavierStokes2D(viscosity=nu, forcing=jnp.asarray(forcing), time_stencil=stencil, time_accuracy=order)
        r = pde.residual(pde.terms(jnp.asarray(ref["w"]), grid))
        np.testing.assert_allclose(r, 0.0, atol=1e-11)
        # Without the forcing the same field is not a solution.
        assert np.abs(np.asarray(NavierStokes2D(viscosity=nu).residual(
            NavierStokes2D(viscosity=nu).terms(jnp.asarray(ref["w"]), grid)))).max() > 0.1


@pytest.mark.parametrize("stencil,order", STENCILS)
def test_taylor_green_residual_converges_at_the_stencils_order(stencil, order):
    nu = 0.02  # decay rate 2 nu (2 pi)^2 ~ 1.6 over t in [0, 1]
    pde = NavierStokes2D(viscosity=nu, time_stencil=stencil, time_accuracy=order)
    errs = []
    for nt in (21, 41, 81):
        grid = navier_stokes_grid(nt, 8, 8, 1.0)
        w = jnp.asarray(taylor_green(grid, nu))
        terms = pde.terms(w, grid)
        at = lambda name: terms[..., pde.term_names.index(name)]  # noqa: E731
        advection = at("u") * at("w_x") + at("v") * at("w_y")
        assert np.abs(np.asarray(advection)).max() < 1e-12  # u . grad w = 0 for Taylor-Green
        domain = pde.residual_domain(grid)
        if stencil == "backward":
            domain[:order] = False  # BDF2's first row is BDF1 (one first-order start-up step)
        r = np.asarray(pde.residual(terms))[domain]
        errs.append(np.abs(r).max())
    observed = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(observed - order) < 0.2), (errs, observed)


def test_grids_that_do_not_fit_are_refused():
    pde = NavierStokes2D()
    with pytest.raises(GridError, match="periodic"):
        pde.check_grid(Grid((Axis("t", 4, 0, 1), Axis("x", 8, 0, 1, "cells"), Axis("y", 8, 0, 1, "periodic"))))
    with pytest.raises(GridError, match="axes"):
        pde.check_grid(Grid((Axis("t", 4, 0, 1), Axis("x", 8, 0, 1, "periodic"))))
    with pytest.raises(GridError, match="forcing"):
        NavierStokes2D(forcing=jnp.zeros((8, 8))).check_grid(navier_stokes_grid(4, 16, 16))
    with pytest.raises(GridError, match="'nodes'"):
        pde.check_grid(Grid((Axis("t", 4, 0, 1, "periodic"), Axis("x", 8, 0, 1, "periodic"),
                             Axis("y", 8, 0, 1, "periodic"))))
    with pytest.raises(ValueError, match="time_accuracy"):
        NavierStokes2D(time_stencil="midpoint", time_accuracy=4)


def test_navier_stokes_grid_points():
    grid = navier_stokes_grid(64, 32, 16, 5.0)
    assert grid.shape == (64, 32, 16)
    np.testing.assert_allclose(grid.coords("t"), 5.0 * np.arange(64) / 63)
    np.testing.assert_allclose(grid.coords("x"), np.arange(32) / 32)
    np.testing.assert_allclose(grid.coords("y"), np.arange(16) / 16)


def _basis(grid, n, seed):
    rng = np.random.default_rng(seed)
    m = grid.mesh()
    cols = [np.cos(TAU * (rng.integers(0, 3) * m[..., 1] + rng.integers(0, 3) * m[..., 2]) + rng.normal())
            * (1.0 + rng.normal() * m[..., 0]) for _ in range(n)]
    return jnp.asarray(np.stack(cols, -1))


@pytest.mark.parametrize("initial", ["rows", "construction"])
def test_constraint_layer_solves_a_tiny_navier_stokes_problem(initial):
    """PI-HC on 8 x 16 x 16 with a random basis: the solve converges to scipy's minimiser of the same rows."""
    grid = navier_stokes_grid(8, 16, 16, 1.0)
    pde = NavierStokes2D(viscosity=1e-2)
    basis = _basis(grid, 6, 0)
    u0 = jnp.asarray(taylor_green(grid, 0.0)[0])
    weights = RowWeights(pde=1.0, initial=10.0, boundary=1.0, ridge=1e-4)
    hc = HardConstraint(pde, grid, (1, 1, 1), 300, row_weights=weights, initial_condition=initial,
                        solver=LevenbergMarquardt(rtol=1e-12, atol=1e-14, max_steps=200))
    out = hc(basis, u0, jax.random.key(0))
    assert int(out.solution.status[0]) == RESULTS.successful
    pts = np.asarray(out.points[0])
    s = (grid.coords("t") / grid.axes[0].hi)[:, None, None, None]

    b = basis - basis.mean(axis=(1, 2), keepdims=True)  # the PDE's parametrise: spatial means removed
    b = b * s if initial == "construction" else b
    offset = u0[None] if initial == "construction" else jnp.zeros(grid.shape)

    @jax.jit
    def r(w):  # the expert's problem, assembled from the PDE's own methods
        u = b @ w + offset
        res = pde.residual(pde.terms(u, grid)).ravel()[pts]
        ic = pde.initial_rows(u, u0, grid)
        return jnp.concatenate([np.sqrt(1.0 / len(pts)) * res, np.sqrt(10.0 / ic.size) * ic, 1e-4 * w])

    jac = jax.jit(jax.jacfwd(r))
    ref = scipy.optimize.least_squares(lambda w: np.asarray(r(jnp.asarray(w))), np.asarray(out.weights[0]) * 1.05,
                                       jac=lambda w: np.asarray(jac(jnp.asarray(w))), xtol=1e-15, ftol=1e-15,
                                       gtol=1e-15)
    np.testing.assert_allclose(out.weights[0], ref.x, rtol=1e-6, atol=1e-8)
    if initial == "construction":
        np.testing.assert_allclose(out.u[0], u0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out.u).mean(axis=(1, 2)), float(u0.mean()), atol=1e-13)


def test_the_viscosity_gradient_through_the_layer_matches_the_implicit_adjoint_and_finite_differences():
    """nu enters the linear term L = w_t - nu lap w, so its cotangent flows through the layer's
    linearisation (not through F): 1 x 2 x 2 experts, blended, the structured adjoint against the
    generic one and a central difference of the converged solve."""
    grid = navier_stokes_grid(6, 8, 8, 0.5)
    basis = _basis(grid, 6, 3)
    u0 = jnp.asarray(taylor_green(grid, 0.0)[0] + 0.3 * np.cos(TAU * grid.mesh()[0, ..., 1]))
    probe = jnp.asarray(np.random.default_rng(4).normal(size=grid.shape))

    def loss(nu, adjoint):
        hc = HardConstraint(NavierStokes2D(viscosity=nu), grid, (1, 2, 2), 60, overlap=(0, 2, 2), blend=True,
                            initial_condition="construction", adjoint=adjoint,
                            row_weights=RowWeights(ridge=1e-6),
                            solver=LevenbergMarquardt(rtol=1e-12, atol=1e-14, max_steps=200))
        out = hc(basis, u0, jax.random.key(0))
        return jnp.sum(probe * out.u), out.solution.status

    nu = jnp.asarray(0.05)
    grad = eqx.filter_jit(jax.value_and_grad(loss, has_aux=True))
    (_, status), g = grad(nu, StructuredAdjoint())
    assert np.all(np.asarray(status) == RESULTS.successful)
    _, ref = grad(nu, ImplicitAdjoint())
    np.testing.assert_allclose(g, ref, rtol=1e-9)
    h = 1e-5
    value = eqx.filter_jit(lambda v: loss(v, StructuredAdjoint())[0])
    fd = (value(nu + h) - value(nu - h)) / (2 * h)
    assert abs(float(g)) > 1e-3
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_initial_tendency_is_the_analytic_right_hand_side():
    """The backbone's ``tendency`` inputs: r0 = u0 . grad w0 - nu lap w0 (analytic) and u0 - (t - t0) r0."""
    from pihc.models import initial_tendency, input_features

    nu = 3e-2
    grid = navier_stokes_grid(6, 16, 12, 2.0)
    ref = {k: v[0] for k, v in modes(grid).items()}
    r0 = ref["u"] * ref["w_x"] + ref["v"] * ref["w_y"] - nu * ref["lap_w"]
    assert np.abs(r0).max() > 1.0  # the advection term is not negligible here
    pde = NavierStokes2D(viscosity=nu)
    np.testing.assert_allclose(initial_tendency(pde, jnp.asarray(ref["w"]), grid), r0, atol=1e-11)
    x = input_features(jnp.asarray(ref["w"]), grid, pde=pde, features="tendency")
    t = grid.axes[0].coords[:, None, None]
    np.testing.assert_allclose(x[..., -2], np.broadcast_to(r0, grid.shape), atol=1e-11)
    np.testing.assert_allclose(x[..., -1], ref["w"] - t * r0, atol=1e-10)
    np.testing.assert_allclose(x[..., :-2], input_features(jnp.asarray(ref["w"]), grid), atol=0)


def test_taylor_features_match_the_solvers_second_time_derivative():
    """``features="taylor"``: u_tt = N'(w0) N(w0) against a second-order one-sided difference of the
    pseudo-spectral solver's solution, and the channels w0 - t r0 + t^2/2 u_tt."""
    from pihc.data.navier_stokes import solve_navier_stokes
    from pihc.models import feature_count, input_features

    nu, n, h = 1e-2, 32, 1e-3
    x = np.arange(n) / n
    X, Y = np.meshgrid(x, x, indexing="ij")
    # Wavenumbers of at most 2: every product in N(w0) and N'(w0) N(w0) stays below the solver's
    # 2/3 cut on 32 points, so the dealiased solver and the PDE's pointwise products agree.
    w0 = (np.sin(2 * np.pi * X) * np.cos(2 * np.pi * Y) + 0.7 * np.cos(4 * np.pi * X + 2 * np.pi * Y)
          + 0.4 * np.sin(2 * np.pi * Y))
    w = solve_navier_stokes(w0[None], NavierStokes2D(viscosity=nu), nt=4, t_end=3 * h, solve_nx=n, substeps=20)[0]
    utt_fd = (2 * w[0] - 5 * w[1] + 4 * w[2] - w[3]) / h ** 2
    grid = navier_stokes_grid(6, n, n, 1.0)
    pde = NavierStokes2D(viscosity=nu)
    feats = input_features(jnp.asarray(w0), grid, pde=pde, features="taylor")
    assert feats.shape[-1] == feature_count(3, "taylor") == 8
    utt = np.asarray(feats[0, ..., -2])
    scale = np.abs(utt_fd).max()
    assert scale > 1.0
    # The difference is second order in h: 1.5e-5 of the scale at h = 1e-3.
    np.testing.assert_allclose(utt, utt_fd, atol=3e-5 * scale)
    r0 = np.asarray(feats[0, ..., -4])
    t = grid.axes[0].coords[:, None, None]
    np.testing.assert_allclose(feats[..., -1], w0 - t * r0 + 0.5 * t ** 2 * utt, atol=1e-5)
    np.testing.assert_allclose(feats[..., :-2], input_features(jnp.asarray(w0), grid, pde=pde, features="tendency"),
                               atol=0)
