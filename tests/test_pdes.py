"""DiffusionSorption against closed-form solutions and hand-coded references."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.grid import Axis, Grid, GridError
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid

D = 5e-4
K = 2.0 * np.pi          # wave number of the heat modes
T_MAX = 100.0            # D K^2 T_MAX ~ 2: the mode decays by e^-2 over the run


def _grid(nt, nx, t_max=T_MAX):
    return Grid((Axis("t", int(nt), 0.0, t_max, "nodes"), Axis("x", int(nx), 0.0, 1.0, "cells")))


def _heat_mode(grid, discrete=False):
    """u = 1 + exp(-D lam t) sin(K (x + dx/2)).

    The sine vanishes at the left ghost location x = -dx/2, so u there equals
    the boundary value 1 and the left cell's ghost closure is consistent.
    ``lam = K^2`` gives the exact solution of u_t = D u_xx; ``lam = (4/dx^2)
    sin^2(K dx/2)`` (the compact stencil's eigenvalue) gives the exact
    solution of the semi-discrete system u_t = D delta_xx u, so that the
    residual is pure time-discretisation error.
    """
    t = grid.coords("t")[:, None]
    x = grid.coords("x")[None, :]
    dx = grid.spacing("x")
    lam = (4.0 / dx**2) * np.sin(K * dx / 2.0) ** 2 if discrete else K**2
    return 1.0 + np.exp(-D * lam * t) * np.sin(K * (x + dx / 2.0))


@eqx.filter_jit
def _residual(pde, u, grid):
    return pde.residual(pde.terms(u, grid))


def _interior_error(pde, grid, u, first_row=1):
    """max |residual| over rows t >= first_row and every cell but the last.

    The last cell's ghost is the discrete Robin closure D (u_{n-2} - u_{n-1}) / dx,
    which a free heat mode does not satisfy; that cell is checked against
    the hand-coded reference instead.
    """
    r = np.asarray(_residual(pde, jnp.asarray(u), grid))
    return np.max(np.abs(r[first_row:, :-1]))


def _slope(h, err):
    return np.polyfit(np.log(h), np.log(err), 1)[0]


# ------------------------------------------- sorption off: the heat equation

def test_sorption_off_retardation_is_one():
    pde = DiffusionSorption(freundlich_k=0.0)
    np.testing.assert_array_equal(pde.retardation(jnp.linspace(-1.0, 2.0, 7)), 1.0)


def test_heat_residual_is_second_order_in_dx():
    pde = DiffusionSorption(diffusivity=D, freundlich_k=0.0, time_accuracy=4, boundary_offset=None,
                            time_stencil="central")
    nxs = np.array([16, 32, 64, 128])
    errs = [_interior_error(pde, g, _heat_mode(g)) for g in (_grid(201, n) for n in nxs)]
    slope = _slope(1.0 / nxs, errs)
    assert slope > 2 - 0.2, (slope, errs)
    # the error is D K^4 dx^2 / 12 at the mode's peak (the compact stencil's)
    assert errs[-1] == pytest.approx(D * K**4 / 12 / 128**2, rel=0.05)


@pytest.mark.parametrize("stencil, accuracy", [("central", 2), ("central", 4), ("backward", 1),
                                               ("backward", 2)])
def test_heat_residual_converges_in_dt_at_time_accuracy(stencil, accuracy):
    pde = DiffusionSorption(diffusivity=D, freundlich_k=0.0, time_accuracy=accuracy,
                            boundary_offset=None, time_stencil=stencil)
    nts = np.array([11, 21, 41, 81])
    # BDF2 starts with one BDF1 row (only one earlier point): first order there.
    first = 2 if stencil == "backward" else 1
    errs = [_interior_error(pde, g, _heat_mode(g, discrete=True), first)
            for g in (_grid(n, 256) for n in nts)]
    slope = _slope(T_MAX / (nts - 1), errs)
    assert slope > accuracy - 0.2, (slope, errs)
    if first == 2:
        row1 = [np.max(np.abs(np.asarray(_residual(pde, jnp.asarray(_heat_mode(g, True)), g))[1, :-1]))
                for g in (_grid(n, 256) for n in nts)]
        assert 0.8 < _slope(T_MAX / (nts - 1), row1) < 1.2, row1


@pytest.mark.parametrize("stencil", ["central", "backward"])
def test_heat_residual_second_order_under_joint_refinement(stencil):
    # exact continuous solution, dt and dx halved together (second order in
    # both; BDF2's first row is BDF1, left out)
    pde = DiffusionSorption(diffusivity=D, freundlich_k=0.0, time_accuracy=2, boundary_offset=None,
                            time_stencil=stencil)
    ns = np.array([16, 32, 64, 128])
    first = 2 if stencil == "backward" else 1
    errs = [_interior_error(pde, g, _heat_mode(g), first) for g in (_grid(n // 2 + 1, n) for n in ns)]
    slope = _slope(1.0 / ns, errs)
    assert slope > 2 - 0.2, (slope, errs)


# ---------------------------------- sorption on: a hand-coded numpy reference

def _numpy_residual(u, dt, dx, D, phi, rho, kf, nf, bv, eps):
    """u_t - D / R(u) u_xx with PDEBench's ghost cells, in plain numpy.

    u_t: second-order central differences, one-sided (-3, 4, -1)/2dt at the
    ends (``np.gradient(edge_order=2)``).  u_xx: compact stencil on u padded
    with the ghosts bv and D (u_{n-2} - u_{n-1}) / dx.
    """
    u_t = np.gradient(u, dt, axis=0, edge_order=2)
    right = D * (u[:, -2] - u[:, -1]) / dx
    padded = np.concatenate([np.full((u.shape[0], 1), bv), u, right[:, None]], axis=1)
    u_xx = (padded[:, 2:] - 2.0 * u + padded[:, :-2]) / dx**2
    R = 1.0 + (1.0 - phi) / phi * rho * kf * nf * (u + eps) ** (nf - 1.0)
    return u_t - D / R * u_xx


def _smooth_positive(grid):
    t = grid.coords("t")[:, None] / grid.axis("t").hi
    x = grid.coords("x")[None, :]
    return 0.1 + 0.8 * np.exp(-3.0 * x) * (1.0 - np.exp(-4.0 * t)) + 0.05 * np.sin(5.0 * x + t)


# boundary_offset=None: PDEBench's ghost cells on the test's own grid, as the
# hand-coded references assume; the located closure has its own tests below.
PARAMS = dict(diffusivity=7e-4, porosity=0.35, bulk_density=2500.0, freundlich_k=4e-4,
              freundlich_n=0.8, boundary_value=0.9, regularisation=1e-5, boundary_offset=None,
              time_stencil="central", residual_form="divided")


def test_residual_with_sorption_equals_numpy_reference():
    grid = _grid(21, 40, t_max=500.0)
    u = _smooth_positive(grid)
    pde = DiffusionSorption(**PARAMS, time_accuracy=2)
    got = np.asarray(_residual(pde, jnp.asarray(u), grid))
    ref = _numpy_residual(u, grid.spacing("t"), grid.spacing("x"), PARAMS["diffusivity"],
                          PARAMS["porosity"], PARAMS["bulk_density"], PARAMS["freundlich_k"],
                          PARAMS["freundlich_n"], PARAMS["boundary_value"],
                          PARAMS["regularisation"])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # the reference is not trivially small: sorption matters here
    heat = np.asarray(_residual(DiffusionSorption(**{**PARAMS, "freundlich_k": 0.0}),
                                jnp.asarray(u), grid))
    assert np.max(np.abs(heat - got)) > 1e-3 * np.max(np.abs(got))


@pytest.mark.parametrize("field, value", [
    ("diffusivity", 1e-3), ("porosity", 0.4), ("bulk_density", 2000.0),
    ("freundlich_k", 1e-3), ("freundlich_n", 0.7), ("boundary_value", 0.5),
    ("regularisation", 1e-2),
])
def test_changing_a_field_changes_the_residual(field, value):
    grid = _grid(11, 32, t_max=500.0)
    u = jnp.asarray(_smooth_positive(grid))
    base = DiffusionSorption()
    changed = eqx.tree_at(lambda p: getattr(p, field), base, value)
    r0 = np.asarray(_residual(base, u, grid))
    r1 = np.asarray(_residual(changed, u, grid))
    assert np.max(np.abs(r1 - r0)) > 1e-4 * np.max(np.abs(r0))


# --------------------------------------------------------- affine terms

@pytest.mark.parametrize("accuracy", [2, 4])
def test_terms_are_affine_in_u(accuracy):
    grid = _grid(9, 12)
    pde = DiffusionSorption(**PARAMS, time_accuracy=accuracy)
    rng = np.random.default_rng(0)
    u, v = (jnp.asarray(rng.normal(size=grid.shape)) for _ in range(2))
    a, b = 1.3, -0.7
    c = pde.terms(jnp.zeros(grid.shape), grid)
    lhs = pde.terms(a * u + b * v, grid) - c
    rhs = a * (pde.terms(u, grid) - c) + b * (pde.terms(v, grid) - c)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11, atol=1e-9)
    # the constant part is the left ghost alone: bv / dx^2 in the first cell's u_xx
    expected_c = np.zeros(grid.shape + (3,))
    expected_c[:, 0, 2] = PARAMS["boundary_value"] / grid.spacing("x") ** 2
    np.testing.assert_allclose(c, expected_c, rtol=1e-14)
    assert pde.term_names == ("u", "u_t", "u_xx")
    np.testing.assert_array_equal(pde.terms(u, grid)[..., 0], u)


# ------------------------------------------------- initial and boundary rows

def test_initial_rows_vanish_at_the_initial_condition():
    grid = _grid(6, 10)
    pde = DiffusionSorption()
    rng = np.random.default_rng(1)
    u = rng.normal(size=grid.shape)
    u0 = u[0].copy()
    np.testing.assert_array_equal(pde.initial_rows(jnp.asarray(u), jnp.asarray(u0), grid), 0.0)
    rows = np.asarray(pde.initial_rows(jnp.asarray(u), jnp.asarray(u0 + 0.25), grid))
    np.testing.assert_allclose(rows, -0.25, rtol=1e-14)


def _boundary_locations(grid, pde):
    """Where the boundary values are held: -offset and 1 + offset."""
    off = grid.spacing("x") / 2 if pde.boundary_offset is None else pde.boundary_offset
    return -off, 1.0 + off


def _quadratic_satisfying_ghosts(grid, pde, c2):
    """a + b x + c2 x^2 that takes the boundary values at the boundary locations.

    Left: f(-offset) = bv.  Right: f(1 + offset) = D (f(x_{n-2}) - f(x_{n-1})) / dx.
    Two linear equations for (a, b); a quadratic is extrapolated exactly by
    the rows' 3-point rule, so the rows must vanish to round-off.
    """
    x = grid.coords("x")
    dx = grid.spacing("x")
    xl, xr = _boundary_locations(grid, pde)
    Dd = pde.diffusivity / dx
    A = np.array([[1.0, xl], [1.0, xr - Dd * (x[-2] - x[-1])]])
    rhs = np.array([pde.boundary_value - c2 * xl**2,
                    -c2 * xr**2 + Dd * c2 * (x[-2] ** 2 - x[-1] ** 2)])
    a, b = np.linalg.solve(A, rhs)
    return a + b * x + c2 * x**2


@pytest.mark.parametrize("offset", [None, 0.0, 0.5 / 1024, 0.05])
def test_boundary_rows_vanish_on_quadratic_matching_the_ghosts(offset):
    grid = _grid(5, 16)
    pde = DiffusionSorption(**{**PARAMS, "boundary_offset": offset})
    c2 = np.array([0.3, -1.0, 2.0, 0.0, 0.7])[:, None]     # a different quadratic per time
    u = np.stack([_quadratic_satisfying_ghosts(grid, pde, c[0]) for c in c2])
    rows = np.asarray(pde.boundary_rows(jnp.asarray(u), grid))
    assert rows.shape == (2 * (grid.shape[0] - 1),)
    np.testing.assert_allclose(rows, 0.0, atol=1e-12)
    # shifting u by a constant breaks the left condition by the shift and the
    # right one by the shift too (the right ghost sees only differences)
    shifted = np.asarray(pde.boundary_rows(jnp.asarray(u + 0.1), grid))
    np.testing.assert_allclose(shifted, 0.1, rtol=1e-10)


@pytest.mark.parametrize("offset", [0.0, 0.5 / 1024, 0.01, 0.05])
def test_ghosts_extrapolate_linear_profiles_through_the_boundary_location(offset):
    """A straight line with f(-offset) = bv and f(1 + offset) = -D f' (the outflow
    value) is reproduced exactly by the ghost values, so its u_xx vanishes in
    every cell; PDEBench's closure on this 16-cell grid holds the values half
    a cell (1/32) out instead and leaves u_xx = O(1 / dx) in the edge cells."""
    grid = _grid(3, 16)
    pde = DiffusionSorption(**{**PARAMS, "boundary_offset": offset})
    x = grid.coords("x")
    bv, D = pde.boundary_value, pde.diffusivity
    # f = bv + beta (x + offset); f(1 + offset) = bv + beta (1 + 2 offset) = -D beta
    beta = -bv / (1.0 + 2.0 * offset + D)
    u = np.stack([bv + beta * (x + offset)] * 3)
    u_xx = np.asarray(pde.terms(jnp.asarray(u), grid))[..., 2]
    np.testing.assert_allclose(u_xx, 0.0, atol=1e-9)
    np.testing.assert_allclose(pde.boundary_rows(jnp.asarray(u), grid), 0.0, atol=1e-12)
    if abs(offset - grid.spacing("x") / 2) > 1e-3:
        pdebench = DiffusionSorption(**{**PARAMS, "boundary_offset": None})
        edge = np.asarray(pdebench.terms(jnp.asarray(u), grid))[..., 0, 2]
        assert np.all(np.abs(edge) > 0.1 * abs(beta) * abs(offset - 1 / 32) * 16**2)


def test_located_closure_is_pdebench_closure_on_pdebench_grid():
    grid = diffusion_sorption_grid(nt=4, nx=1024)
    u = jnp.asarray(np.random.default_rng(4).uniform(size=grid.shape))
    located, pdebench = DiffusionSorption(), DiffusionSorption(boundary_offset=None)
    assert located.boundary_offset == 0.5 / 1024 and located.ghost_weight(1 / 1024) == 1.0
    np.testing.assert_array_equal(located.terms(u, grid), pdebench.terms(u, grid))
    np.testing.assert_allclose(located.boundary_rows(u, grid), pdebench.boundary_rows(u, grid),
                               rtol=1e-14, atol=1e-14)
    with pytest.raises(ValueError, match="boundary_offset"):
        DiffusionSorption(boundary_offset=-0.1).ghost_weight(0.1)


def _smooth_satisfying_ghosts(x, dx, pde):
    """h(x) + alpha s with s = x + dx/2 and h = bv + sin(3 s) + s^2 cos(s) / 2.

    h(-dx/2) = bv; alpha makes f(1 + dx/2) = D (f(x_{n-2}) - f(x_{n-1})) / dx.
    The linear correction is extrapolated exactly, so the rows are the
    quadratic-extrapolation error of a smooth function: O(dx^3).
    """
    def s(y):
        return y + dx / 2

    def h(y):
        return pde.boundary_value + np.sin(3 * s(y)) + 0.5 * s(y) ** 2 * np.cos(s(y))
    xr = x[-1] + dx
    Dd = pde.diffusivity / dx
    alpha = (Dd * (h(x[-2]) - h(x[-1])) - h(xr)) / (s(xr) - Dd * (s(x[-2]) - s(x[-1])))
    return h(x) + alpha * s(x)


def test_boundary_rows_are_third_order_small_for_smooth_functions():
    pde = DiffusionSorption(**PARAMS)
    nxs = np.array([16, 32, 64, 128])
    errs = []
    for nx in nxs:
        grid = _grid(3, nx)
        x, dx = grid.coords("x"), grid.spacing("x")
        f = _smooth_satisfying_ghosts(x, dx, pde)
        u = np.stack([f] * 3)
        errs.append(np.max(np.abs(np.asarray(pde.boundary_rows(jnp.asarray(u), grid)))))
    slope = _slope(1.0 / nxs, errs)
    assert slope > 3 - 0.2, (slope, errs)
    assert errs[-1] < 40.0 / nxs[-1] ** 3      # |f'''| dx^3 with |f'''| < 40


def test_row_points_index_the_grid_points_each_row_reads():
    grid = _grid(5, 8)
    pde = DiffusionSorption(**PARAMS)
    rng = np.random.default_rng(2)
    u = jnp.asarray(rng.normal(size=grid.shape))
    u0 = jnp.asarray(rng.normal(size=grid.shape[1]))

    pts = pde.initial_row_points(grid)
    np.testing.assert_array_equal(pts, np.stack([np.zeros(8, int), np.arange(8)], -1))
    jac = np.asarray(jax.jacfwd(lambda w: pde.initial_rows(w, u0, grid))(u))
    for r, (ti, xi) in enumerate(pts):
        expected = np.zeros(grid.shape)
        expected[ti, xi] = 1.0
        np.testing.assert_array_equal(jac[r], expected)

    pts = pde.boundary_row_points(grid)
    assert pts.shape == (2 * 4, 2)
    np.testing.assert_array_equal(pts[:4], [[1, 0], [2, 0], [3, 0], [4, 0]])
    np.testing.assert_array_equal(pts[4:], [[1, 7], [2, 7], [3, 7], [4, 7]])
    rows = np.asarray(pde.boundary_rows(u, grid))
    jac = np.asarray(jax.jacfwd(lambda w: pde.boundary_rows(w, grid))(u))
    un, dx = np.asarray(u), grid.spacing("x")
    Dc, bv = PARAMS["diffusivity"], PARAMS["boundary_value"]
    for r, (ti, xi) in enumerate(pts):
        support = np.argwhere(jac[r] != 0)
        assert set(support[:, 0]) == {ti}                 # only the row's own time
        assert xi in set(support[:, 1])                   # reads its own point
        assert np.all(np.abs(support[:, 1] - xi) <= 2)    # and its two neighbours inward
        v = un[ti]
        if xi == 0:
            ref = 3 * v[0] - 3 * v[1] + v[2] - bv
        else:
            ref = 3 * v[-1] - 3 * v[-2] + v[-3] - Dc * (v[-2] - v[-1]) / dx
        assert rows[r] == pytest.approx(ref, rel=1e-12, abs=1e-12)


# -------------------------------------------------- retardation and domain

def test_retardation_equals_formula_and_is_finite_for_negative_u():
    """Hard clip (smoothing=0): PDEBench's formula for u >= 0, R(0) below."""
    pde = DiffusionSorption(**PARAMS, smoothing=0.0)
    p = PARAMS
    coeff = (1 - p["porosity"]) / p["porosity"] * p["bulk_density"] * p["freundlich_k"] \
        * p["freundlich_n"]
    u = np.array([1e-3, 0.1, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(pde.retardation(jnp.asarray(u)),
                               1 + coeff * (u + p["regularisation"]) ** (p["freundlich_n"] - 1),
                               rtol=1e-13)
    neg = pde.retardation(jnp.asarray([-1e-8, -0.5, -10.0]))
    assert np.all(np.isfinite(neg))
    # clipped at u = 0: R(u < 0) = R(0) = 1 + coeff eps^(n_f - 1)
    np.testing.assert_allclose(neg, 1 + coeff * p["regularisation"] ** (p["freundlich_n"] - 1),
                               rtol=1e-13)
    # finite derivatives on both sides; the analytic one for u > 0
    dR = jax.vmap(jax.grad(pde.retardation))(jnp.asarray([-0.5, 0.2]))
    assert np.all(np.isfinite(dR)) and dR[0] == 0.0
    nf = p["freundlich_n"]
    expected = coeff * (nf - 1) * (0.2 + p["regularisation"]) ** (nf - 2)
    assert float(dR[1]) == pytest.approx(expected, rel=1e-12)


def test_smoothed_retardation_is_smooth_and_matches_away_from_zero():
    """The default softplus clip: equal to the formula for u >= 0.01 to 1e-6
    relative, finite everywhere, and its derivative continuous across u = 0."""
    s = 1e-3
    smooth = DiffusionSorption(**PARAMS, smoothing=s)
    hard = DiffusionSorption(**PARAMS, smoothing=0.0)
    u = jnp.asarray([0.01, 0.05, 0.2, 1.0])
    np.testing.assert_allclose(smooth.retardation(u), hard.retardation(u), rtol=1e-6)
    # softplus(u/s) s - u = s log(1 + exp(-u/s)) for u > 0: check the bound exp(-u/s) s
    np.testing.assert_allclose(smooth.positive_part(u) - u, s * np.log1p(np.exp(-np.asarray(u) / s)),
                               rtol=1e-9, atol=1e-18)
    grid = jnp.linspace(-0.02, 0.02, 4001)
    dR = jax.vmap(jax.grad(smooth.retardation))(grid)
    assert np.all(np.isfinite(dR))
    # continuity of the derivative: neighbouring values differ by less than the
    # local scale (a kink would jump from 0 to ~1e6 between two points)
    assert np.max(np.abs(np.diff(np.asarray(dR)))) < 0.05 * np.max(np.abs(np.asarray(dR)))


def test_residual_domain_excludes_initial_time():
    grid = diffusion_sorption_grid(nt=6, nx=8)
    mask = DiffusionSorption().residual_domain(grid)
    assert mask.shape == grid.shape and mask.dtype == bool
    assert not mask[0].any() and mask[1:].all()


def test_check_grid():
    pde = DiffusionSorption()
    pde.check_grid(diffusion_sorption_grid(nt=5, nx=8))
    with pytest.raises(GridError, match="cell-centred"):
        pde.check_grid(Grid((Axis("t", 5, 0, 1), Axis("x", 8, 0, 1, "nodes"))))
    with pytest.raises(GridError, match="'t'"):
        pde.check_grid(Grid((Axis("x", 8, 0, 1, "cells"), Axis("t", 5, 0, 1))))
    with pytest.raises(GridError, match="time axis"):
        pde.check_grid(Grid((Axis("t", 5, 0, 1, "cells"), Axis("x", 8, 0, 1, "cells"))))


# ------------------------------------------------------------ batched PDEs

def test_vmap_over_batched_fields_equals_separate_pdes():
    grid = _grid(11, 32, t_max=500.0)
    rng = np.random.default_rng(3)
    us = jnp.asarray(_smooth_positive(grid)[None] * (1 + 0.1 * rng.uniform(size=(3, 1, 1))))
    ds = np.array([1e-4, 5e-4, 2e-3])
    phis = np.array([0.25, 0.29, 0.4])
    batch = DiffusionSorption(diffusivity=jnp.asarray(ds), porosity=jnp.asarray(phis))

    def per_sample(pde, u):
        return pde.residual(pde.terms(u, grid)), pde.boundary_rows(u, grid)

    res, rows = eqx.filter_jit(eqx.filter_vmap(per_sample))(batch, us)
    for i in range(3):
        single = DiffusionSorption(diffusivity=float(ds[i]), porosity=float(phis[i]))
        r_i, b_i = eqx.filter_jit(per_sample)(single, us[i])
        np.testing.assert_allclose(res[i], r_i, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rows[i], b_i, rtol=1e-12, atol=1e-15)
    # the batch really differs from sample to sample
    assert np.max(np.abs(res[0] - res[2])) > 1e-3 * np.max(np.abs(res[0]))


# ------------------------------------------------ residual form and stencil

def test_multiplied_form_is_divided_form_times_retardation_ratio():
    grid = _grid(11, 32, t_max=500.0)
    u = jnp.asarray(_smooth_positive(grid))
    mult = DiffusionSorption(**{**PARAMS, "residual_form": "multiplied"})
    div = DiffusionSorption(**PARAMS)
    ratio = np.asarray(div.retardation(u)) / float(div.retardation(jnp.asarray(PARAMS["boundary_value"])))
    assert ratio.min() > 1.0  # u < u_b: the factor is not trivially one
    np.testing.assert_allclose(_residual(mult, u, grid), ratio * np.asarray(_residual(div, u, grid)),
                               rtol=1e-12, atol=1e-15)


def test_backward_stencil_reads_only_earlier_times():
    grid = _grid(6, 8)
    pde = DiffusionSorption()  # the default: BDF2 in time
    u = jnp.asarray(np.random.default_rng(5).uniform(0.1, 0.9, grid.shape))
    jac = np.asarray(jax.jacfwd(lambda v: _residual(pde, v, grid))(u))  # (t, x, t', x')
    for n in range(1, 6):
        reads = np.flatnonzero(np.abs(jac[n]).sum(axis=(0, 2)))
        assert reads.max() == n and reads.min() == max(n - 2, 0), (n, reads)
    dt = grid.spacing("t")
    un = np.asarray(u)
    np.testing.assert_allclose(np.asarray(pde.terms(u, grid))[3, :, 1],
                               (3 * un[3] - 4 * un[2] + un[1]) / (2 * dt), rtol=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(time_stencil="forward"), "time_stencil"),
    (dict(time_stencil="backward", time_accuracy=4), "time_accuracy"),
    (dict(time_stencil="central", time_accuracy=1), "time_accuracy"),
    (dict(residual_form="flux"), "residual_form"),
])
def test_bad_discretisation_settings_are_refused(kw, match, unchecked):
    with pytest.raises(ValueError, match=match):
        DiffusionSorption(**kw)
