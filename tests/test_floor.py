"""pihc.training.floor: the discretisation floor, its sparse Jacobian, the default residual's basin."""

import jax
import jax.numpy as jnp
import numpy as np

from pihc.losses import LossWeights
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.floor import _stacked_residual, discretisation_floor, sparse_jacobian


def test_sparse_jacobian_equals_dense_autodiff():
    grid = diffusion_sorption_grid(nt=7, nx=12, t_max=30.0)
    pde = DiffusionSorption(time_stencil="central", time_accuracy=4)
    u0 = jnp.full(12, 0.1)
    r = _stacked_residual(pde, grid, u0, LossWeights(10.0, 2.0, 3.0))
    v = jnp.asarray(np.random.default_rng(0).uniform(0.05, 0.9, grid.size))
    J = sparse_jacobian(r, v, (4, 4), grid.shape).toarray()
    np.testing.assert_allclose(J, np.asarray(jax.jacfwd(r)(v)), rtol=1e-12, atol=1e-12)


def test_floor_equals_a_dense_scipy_minimiser():
    import scipy.optimize

    grid = diffusion_sorption_grid(nt=6, nx=16, t_max=20.0)
    pde = DiffusionSorption()
    u0 = np.full(16, 0.1)
    w = LossWeights(400.0, 1.0, 1.0)
    m = grid.mesh()
    start = 0.1 + 0.9 * np.exp(-m[..., 1] / 0.1) * (m[..., 0] > 0)
    res = discretisation_floor(pde, grid, start, u0, w)
    r = jax.jit(_stacked_residual(pde, grid, jnp.asarray(u0), w))
    ref = scipy.optimize.least_squares(lambda v: np.asarray(r(jnp.asarray(v))), start.ravel(),
                                       jac=lambda v: np.asarray(jax.jacfwd(r)(jnp.asarray(v))),
                                       xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert res["loss_floor"] <= 2 * ref.cost * (1 + 1e-6) + 1e-20
    np.testing.assert_allclose(res["u"].ravel(), ref.x, rtol=1e-6, atol=1e-8)


def test_default_discretisation_has_one_minimum_reachable_from_zero():
    """The training loss over grid functions, minimised from u = 0, reaches the
    floor (the minimum next to the truth) with the default residual (R(u) u_t -
    D u_xx, BDF2 in time); with PDEBench's form u_t - D u_xx / R(u) and central
    time differences the same minimiser stalls far away (a frozen front in a
    region of negative u, as the trained networks showed)."""
    from pihc.data.diffusion_sorption import solve_as_generated

    grid = diffusion_sorption_grid(nt=51, nx=128)
    truth = solve_as_generated(np.full(128, 0.02), DiffusionSorption(), grid)[0]
    w = LossWeights(250000.0, 1e4, 1e4)
    zero = np.zeros(grid.shape)
    pde = DiffusionSorption()
    floor = discretisation_floor(pde, grid, truth, truth[0], w)
    found = discretisation_floor(pde, grid, truth, truth[0], w, start=zero)
    assert floor["rel_l2"] < 0.02
    np.testing.assert_allclose(found["u"], floor["u"], atol=1e-6)
    old = DiffusionSorption(time_stencil="central", residual_form="divided")
    stalled = discretisation_floor(old, grid, truth, truth[0], w, start=zero, gn_steps=30)
    assert stalled["rel_l2"] > 0.5


def test_matrix_free_floor_equals_the_sparse_one():
    from pihc.training.floor import matrix_free_floor

    grid = diffusion_sorption_grid(nt=6, nx=16, t_max=20.0)
    pde = DiffusionSorption()
    u0 = np.full(16, 0.1)
    w = LossWeights(400.0, 1.0, 1.0)
    m = grid.mesh()
    start = 0.1 + 0.9 * np.exp(-m[..., 1] / 0.1) * (m[..., 0] > 0)
    sparse = discretisation_floor(pde, grid, start, u0, w)
    free = matrix_free_floor(pde, grid, start, u0, w, inner_tol=1e-12)
    assert free["loss_floor"] <= sparse["loss_floor"] * (1 + 1e-6) + 1e-20
    np.testing.assert_allclose(free["u"], sparse["u"], atol=1e-7)


def test_navier_stokes_midpoint_floor_is_the_implicit_midpoint_scheme():
    """The midpoint residual rows are a causal implicit scheme: the floor has zero loss and is
    the scheme's solution, here stepped independently (NumPy FFTs, scipy's root finder)."""
    import scipy.optimize

    from pihc import NavierStokes2D, navier_stokes_grid
    from pihc.data.navier_stokes import initial_vorticity, solve_navier_stokes
    from pihc.training.floor import matrix_free_floor

    nu, n, nt, T = 1e-2, 8, 5, 1.0
    grid = navier_stokes_grid(nt, n, n, T)
    pde = NavierStokes2D(viscosity=nu)
    truth = solve_navier_stokes(3.0 * initial_vorticity(1, n, n, seed=5), pde, nt=nt, t_end=T, solve_nx=n)[0]
    floor = matrix_free_floor(pde, grid, truth, truth[0], LossWeights(1.0, 1.0, 1.0), inner_tol=1e-12)
    assert floor["loss_floor"] < 1e-24 * floor["loss_true"] + 1e-28

    k = 2 * np.pi * np.fft.fftfreq(n, 1.0 / n)
    k1 = np.where(np.abs(np.fft.fftfreq(n, 1.0 / n)) == n // 2, 0.0, k)  # odd derivatives drop Nyquist
    KX, KY = np.meshgrid(k, k, indexing="ij")
    K1X, K1Y = np.meshgrid(k1, k1, indexing="ij")
    k2 = KX**2 + KY**2
    inv = np.where(k2 > 0, 1 / np.where(k2 > 0, k2, 1), 0)

    def rhs(w):
        wh = np.fft.fft2(w)
        d = lambda m: np.real(np.fft.ifft2(m * wh))  # noqa: E731
        return -(d(1j * K1Y * inv) * d(1j * K1X) + d(-1j * K1X * inv) * d(1j * K1Y)) + nu * d(-k2)

    dt = T / (nt - 1)
    w = [truth[0]]
    for _ in range(nt - 1):
        prev = w[-1]
        f = lambda x: ((x.reshape(n, n) - prev) / dt - rhs(0.5 * (x.reshape(n, n) + prev))).ravel()  # noqa: E731
        sol = scipy.optimize.root(f, prev.ravel(), tol=1e-14)
        w.append(sol.x.reshape(n, n))
    np.testing.assert_allclose(floor["u"], np.stack(w), atol=1e-9)
    assert floor["rel_l2"] > 1e-4  # the scheme's own error: the floor is not the truth
