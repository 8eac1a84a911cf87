"""The hard-constraint layer against independently assembled least-squares problems."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from pihc.adjoint import ImplicitAdjoint, StructuredAdjoint
from pihc.constraint import HardConstraint
from pihc.experts import ExpertProblem, RowWeights
from pihc.grid import GridError
from pihc.least_squares import RESULTS, LevenbergMarquardt
from pihc.linearise import linearise
from pihc.partition import partition
from pihc.pdes import DiffusionSorption, NavierStokes2D, diffusion_sorption_grid, navier_stokes_grid

GRID = diffusion_sorption_grid(nt=9, nx=32, t_max=40.0)
PDE = DiffusionSorption()
WEIGHTS = RowWeights(pde=40.0 ** 2, initial=1.0, boundary=0.5, ridge=1e-3)
TIGHT = dict(solver=LevenbergMarquardt(rtol=1e-12, atol=1e-14, max_steps=300))


def smooth_basis(n_basis=6, grid=GRID, seed=0):
    rng = np.random.default_rng(seed)
    m = grid.mesh()
    t = (m[..., 0] - grid.axes[0].lo) / (grid.axes[0].hi - grid.axes[0].lo)
    x = m[..., 1]
    cols = [0.3 + 0.2 * np.cos(np.pi * rng.integers(0, 3) * t + rng.normal())
            * np.cos(np.pi * rng.integers(0, 4) * x + rng.normal()) for _ in range(n_basis)]
    return jnp.asarray(np.stack(cols, -1))


def stacked_rows(hc, basis, u0, points, expert):
    """Expert `expert`'s weighted residual w -> r(w), built from the PDE's own methods (no linearisation)."""
    pde = hc.pde
    flat = np.asarray(points[expert])  # flat grid indices
    ic_pts, bc_pts = pde.initial_row_points(GRID), pde.boundary_row_points(GRID)
    if hc.row_scope == "global":
        ic_sel, bc_sel = np.ones(len(ic_pts), bool), np.ones(len(bc_pts), bool)
    else:
        blk = np.array(GRID.shape) // np.array(hc.splits)
        owner = lambda p: np.ravel_multi_index(tuple((p // blk).T), hc.splits)  # noqa: E731
        ic_sel, bc_sel = owner(ic_pts) == expert, owner(bc_pts) == expert
    wt = hc.row_weights

    def r(w):
        u = basis @ jnp.asarray(w)
        res = pde.residual(pde.terms(u, GRID)).ravel()[flat]
        ic = pde.initial_rows(u, u0, GRID)[ic_sel]
        bc = pde.boundary_rows(u, GRID)[bc_sel]
        return np.asarray(jnp.concatenate([
            np.sqrt(wt.pde / len(flat)) * res,
            np.sqrt(wt.initial / max(ic_sel.sum(), 1)) * ic,
            np.sqrt(wt.boundary / max(bc_sel.sum(), 1)) * bc, wt.ridge * jnp.asarray(w)]))

    return r


def reference_weights(hc, basis, u0, points, expert, start):
    """Solve expert `expert`'s problem with scipy from the PDE's own methods (no linearisation)."""
    r = stacked_rows(hc, basis, u0, points, expert)
    # Start scipy near (not at) the layer's answer: the problem is nonconvex,
    # and the test is that both find the same minimiser.
    x0 = np.asarray(start) * (1.0 + 0.05 * np.random.default_rng(expert).normal(size=len(start)))
    return scipy.optimize.least_squares(r, x0, xtol=1e-15, ftol=1e-15, gtol=1e-15).x


# 6, 7 and 24 columns: the forward pass takes them in chunks of 2, 1 and 8.
@pytest.mark.parametrize("n_basis", [6, 7, 24])
def test_linearise_is_the_affine_decomposition(n_basis):
    b = smooth_basis(n_basis)
    u0 = jnp.full(GRID.shape[1], 0.1)
    w = jnp.asarray(np.random.default_rng(1).normal(size=b.shape[-1]))
    lin = linearise(PDE, b, u0, GRID)
    u = b @ w
    np.testing.assert_allclose(jnp.einsum("...tn,n->...t", lin.terms, w) + lin.terms_offset,
                               PDE.terms(u, GRID), rtol=1e-12, atol=1e-12)
    rows = jnp.concatenate([PDE.initial_rows(u, u0, GRID), PDE.boundary_rows(u, GRID)])
    np.testing.assert_allclose(lin.rows @ w + lin.rows_offset, rows, atol=1e-11)
    # Given points, the terms are those of the whole grid at the points.
    pts = jnp.asarray([[3, 40, 100], [7, 8, 200]])
    at = linearise(PDE, b, u0, GRID, points=pts)
    n_terms = lin.terms.shape[-2]
    np.testing.assert_array_equal(at.terms, lin.terms.reshape(-1, n_terms, b.shape[-1])[pts])
    np.testing.assert_array_equal(at.terms_offset, lin.terms_offset.reshape(-1, n_terms)[pts])


@pytest.mark.parametrize("splits,rows,overlap", [((1, 1), "global", None), ((1, 4), "global", None),
                                                  ((1, 4), "local", None), ((1, 4), "global", (0, 3))])
def test_each_expert_equals_an_independent_scipy_solve(splits, rows, overlap):
    b = smooth_basis()
    u0 = jnp.full(GRID.shape[1], 0.12)
    K = int(np.prod(splits))
    hc = HardConstraint(PDE, GRID, splits, 40 if K > 1 else 150, row_scope=rows, row_weights=WEIGHTS,
                        overlap=overlap, **TIGHT)
    out = hc(b, u0, jax.random.key(0))
    assert np.all(np.asarray(out.solution.status) == RESULTS.successful)
    for k in range(K):
        ref = reference_weights(hc, b, u0, out.points, k, out.weights[k])
        scale = np.max(np.abs(ref))
        np.testing.assert_allclose(out.weights[k], ref, rtol=1e-6, atol=1e-6 * scale)
    # The prediction on block k is the basis times expert k's weights.
    blocks = np.einsum("k...n,kn->k...", np.asarray(partition(b, splits)), np.asarray(out.weights))
    np.testing.assert_allclose(np.asarray(partition(out.u, splits)), blocks, rtol=1e-12)


def test_small_initial_damping_solves_a_linear_problem_in_one_step():
    # Without sorption (k_f = 0) the residual R u_t - D u_xx is linear in w,
    # so one undamped (Gauss-Newton) step from any start is the least-squares
    # solution: the default damping stops after it.  The textbook 1e-3 holds
    # the first steps back and needs several.  Reference: numpy's lstsq on
    # the stacked rows, built from the PDE's own methods.
    heat = DiffusionSorption(freundlich_k=0.0)
    b, u0 = smooth_basis(seed=4), jnp.full(GRID.shape[1], 0.1)
    fast = HardConstraint(heat, GRID, (1, 1), 150, row_weights=WEIGHTS,
                          solver=LevenbergMarquardt(rtol=1e-6, atol=1e-14))
    slow = HardConstraint(heat, GRID, (1, 1), 150, row_weights=WEIGHTS,
                          solver=LevenbergMarquardt(rtol=1e-6, atol=1e-14, damping=1e-3))
    out_fast, out_slow = fast(b, u0, jax.random.key(0)), slow(b, u0, jax.random.key(0))
    rows = stacked_rows(fast, b, u0, out_fast.points, 0)
    n = b.shape[-1]
    r0 = rows(np.zeros(n))
    A = np.stack([rows(np.eye(n)[i]) - r0 for i in range(n)], -1)  # exact: r is affine in w
    ref = np.linalg.lstsq(A, -r0, rcond=None)[0]
    assert int(out_fast.solution.num_steps[0]) == 1 and int(out_slow.solution.num_steps[0]) > 3
    for out in (out_fast, out_slow):
        assert int(out.solution.status[0]) == RESULTS.successful
        np.testing.assert_allclose(out.weights[0], ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="damping"):
            LevenbergMarquardt(damping=bad)


def test_one_expert_moe_equals_pi_hc():
    b = smooth_basis(seed=3)
    u0 = jnp.full(GRID.shape[1], 0.05)
    hc = HardConstraint(PDE, GRID, (1, 1), 120, row_weights=WEIGHTS, **TIGHT)
    moe1 = HardConstraint(PDE, GRID, (1, 1), 120, row_scope="local", row_weights=WEIGHTS, **TIGHT)
    a, c = hc(b, u0, jax.random.key(5)), moe1(b, u0, jax.random.key(5))
    np.testing.assert_allclose(a.u, c.u, rtol=1e-10)


def test_local_rows_make_experts_independent():
    """Changing block j's basis (away from the 1-point stencil halo at the seams)
    leaves expert i's weights unchanged with local rows, but not with global rows."""
    b = smooth_basis(seed=4)
    u0 = jnp.full(GRID.shape[1], 0.1)
    b2 = b.at[:, 17:23, :].multiply(1.7)  # inside block 2 of 4 (cells 16..23), off its edges
    for rows, same in [("local", True), ("global", False)]:
        hc = HardConstraint(PDE, GRID, (1, 4), 30, row_scope=rows, row_weights=WEIGHTS, **TIGHT)
        w1, w2 = hc(b, u0, jax.random.key(2)).weights, hc(b2, u0, jax.random.key(2)).weights
        for i in (0, 1, 3):
            if same:
                np.testing.assert_allclose(w1[i], w2[i], rtol=1e-12, atol=1e-14)
            else:
                assert np.max(np.abs(w1[i] - w2[i])) > 1e-8
        assert np.max(np.abs(w1[2] - w2[2])) > 1e-6


def test_threshold_selection_equals_a_sort_with_ties_and_padding():
    # Reference: sort by score (descending), ties by index (ascending), as
    # lax.top_k does; then the chosen items in their original order.
    from pihc.sampling import largest

    rng = np.random.default_rng(0)
    for n, m, levels in [(50, 20, 7), (200, 37, 1000), (64, 64, 3), (10, 1, 2)]:
        scores = (rng.integers(0, levels, n) / levels).astype(np.float32)  # many ties
        valid = rng.random(n) < 0.8
        valid[:m] = True  # at least m valid
        items = rng.permutation(1000)[:n].astype(np.int32)
        order = sorted(np.flatnonzero(valid), key=lambda i: (-scores[i], i))[:m]
        expect = items[np.sort(order)]
        got = np.asarray(largest(jnp.asarray(scores), jnp.asarray(valid), jnp.asarray(items), m=m))
        np.testing.assert_array_equal(got, expect)
        top = np.asarray(jax.lax.top_k(jnp.where(jnp.asarray(valid), jnp.asarray(scores), -1.0), m)[1])
        np.testing.assert_array_equal(np.sort(top), np.sort(order))


def test_sampled_points_are_uniform():
    # Each of the n domain points of an expert is in the sample with
    # probability m / n; over 400 draws the counts are Binomial(400, m/n).
    hc = HardConstraint(PDE, GRID, (1, 4), 40, row_weights=WEIGHTS)
    draws = np.asarray(jax.vmap(hc.sampler().sample)(jax.random.split(jax.random.key(5), 400)))  # (400, 4, 40)
    dom = hc.sampling_domains()
    for k in range(4):
        n = dom[k].sum()
        hits = np.bincount(draws[:, k].ravel(), minlength=GRID.size)
        assert np.all(hits[~dom[k]] == 0)
        p = 40 / n
        z = (hits[dom[k]] - 400 * p) / np.sqrt(400 * p * (1 - p))
        assert np.abs(z).max() < 4.5


def test_points_are_distinct_and_inside_the_domain():
    hc = HardConstraint(PDE, GRID, (1, 4), 64, row_weights=WEIGHTS)
    pts = np.asarray(hc.sampler().sample(jax.random.key(0)))
    dom = np.asarray(partition(PDE.residual_domain(GRID), (1, 4)))  # (4, nt, 8)
    for k in range(4):
        assert len(set(pts[k].tolist())) == 64
        t, x = np.unravel_index(pts[k], GRID.shape)
        assert np.all((x // 8 == k) & dom[k, t, x % 8])
    # With an overlap of 3 cells, expert k samples x in [8k - 3, 8k + 11), clipped.
    wide = HardConstraint(PDE, GRID, (1, 4), 80, row_weights=WEIGHTS, overlap=(0, 3))
    reg = wide.sampling_domains().reshape(4, *GRID.shape)
    for k in range(4):
        cols = np.flatnonzero(reg[k].any(axis=0))
        np.testing.assert_array_equal(cols, np.arange(max(8 * k - 3, 0), min(8 * k + 11, 32)))
        assert not reg[k][0].any()  # t = 0 is outside the residual domain
    t, x = np.unravel_index(np.asarray(wide.sampler().sample(jax.random.key(1)))[1], GRID.shape)
    assert x.min() >= 5 and x.max() <= 18 and ((x < 8) | (x >= 16)).any()
    with pytest.raises(ValueError, match="overlap"):
        HardConstraint(PDE, GRID, (1, 4), 10, overlap=(0, -1))
    with pytest.raises(ValueError, match="overlap"):
        HardConstraint(PDE, GRID, (1, 4), 10, overlap=(2,))
    with pytest.raises(ValueError, match="holds only 64 points"):
        HardConstraint(PDE, GRID, (1, 4), 65)
    with pytest.raises(GridError, match="axis x has 32 points; 3 experts do not divide it"):
        HardConstraint(PDE, GRID, (1, 3), 10)


def test_gradient_through_the_layer_matches_finite_differences():
    b = smooth_basis(seed=6)
    u0 = jnp.full(GRID.shape[1], 0.1)
    hc = HardConstraint(PDE, GRID, (1, 2), 60, row_weights=WEIGHTS, **TIGHT)
    probe = jnp.asarray(np.random.default_rng(0).normal(size=GRID.shape))

    # The implicit gradient is that of the solution, so both solves must
    # converge (expert 1 converges slowly on this basis for some samples).
    assert np.all(np.asarray(hc(b, u0, jax.random.key(0)).solution.status) == RESULTS.successful)

    @jax.jit
    def loss(bb):
        return jnp.sum(probe * hc(bb, u0, jax.random.key(0)).u)

    g = jax.jit(jax.grad(loss))(b)
    eps = 1e-6
    for idx in [(3, 5, 0), (6, 20, 2), (8, 31, 5), (1, 0, 1)]:
        fd = (loss(b.at[idx].add(eps)) - loss(b.at[idx].add(-eps))) / (2 * eps)
        assert abs(g[idx] - fd) <= 1e-5 * max(abs(fd), 1e-3), (idx, g[idx], fd)


def test_nan_basis_reports_status_without_nan_gradient():
    b = smooth_basis(seed=7).at[4, 9, 2].set(jnp.nan)
    u0 = jnp.full(GRID.shape[1], 0.1)
    hc = HardConstraint(PDE, GRID, (1, 2), 60, row_weights=WEIGHTS)
    layer = jax.jit(lambda bb: hc(bb, u0, jax.random.key(0)))
    status = np.asarray(layer(b).solution.status)
    assert status[0] == RESULTS.nonfinite  # the NaN sits in expert 0's block (x < 16)
    g = jax.jit(jax.grad(lambda bb: jnp.sum(layer(bb).weights)))(b)
    assert np.all(np.isfinite(np.asarray(g)))


def test_a_nan_away_from_every_sampled_point_still_fails_its_expert():
    """A NaN in the basis that no sampled point's stencil reads leaves the solves finite, but the
    prediction is not: the expert owning it reports ``nonfinite``, never ``converged``."""
    hc = HardConstraint(PDE, GRID, (1, 2), 30, row_weights=WEIGHTS)
    key = jax.random.key(0)
    pts = np.asarray(hc.sampler().sample(key))
    read = np.zeros(GRID.shape, bool)  # every grid value a sampled point's stencil may read
    for t, x in zip(*np.unravel_index(pts.ravel(), GRID.shape)):
        read[max(t - 2, 0):t + 1, max(x - 1, 0):x + 2] = True
    read[0] = read[:, 0] = read[:, -2:] = True  # the initial and boundary rows
    t, x = np.argwhere(~read[:, 16:])[0] + (0, 16)  # in expert 1's block
    b = smooth_basis(seed=7).at[t, x, 2].set(jnp.nan)
    out = jax.jit(lambda bb: hc(bb, jnp.full(GRID.shape[1], 0.1), key))(b)
    np.testing.assert_array_equal(np.asarray(out.points), pts)
    assert np.isnan(np.asarray(out.u)[t, x]) and np.all(np.isfinite(np.asarray(out.weights)))
    np.testing.assert_array_equal(np.asarray(out.solution.status), [RESULTS.successful, RESULTS.nonfinite])
    assert not bool(out.solution.converged[1])


def test_initial_condition_by_construction_is_exact_and_matches_scipy():
    """u = u0 + (t / T) B w: u(0) = u0 for any basis; the weights equal a scipy
    solve of the same problem written directly with the PDE's methods."""
    b = smooth_basis(seed=4)
    u0 = jnp.asarray(0.1 + 0.05 * np.cos(np.pi * GRID.coords("x")))
    hc = HardConstraint(PDE, GRID, (1, 1), 150, row_weights=WEIGHTS, initial_condition="construction", **TIGHT)
    out = hc(b, u0, jax.random.key(2))
    assert int(out.solution.status[0]) == RESULTS.successful
    np.testing.assert_array_equal(np.asarray(out.u[0]), np.asarray(u0))
    s = (GRID.coords("t") / GRID.axes[0].hi)[:, None]
    np.testing.assert_allclose(out.u, u0[None, :] + s * (b @ out.weights[0]), rtol=1e-12)
    flat = np.asarray(out.points[0])  # one expert: block indices are grid indices
    wt = hc.row_weights

    def r(w):
        u = u0[None, :] + s * (b @ jnp.asarray(w))
        res = PDE.residual(PDE.terms(u, GRID)).ravel()[flat]
        bc = PDE.boundary_rows(u, GRID)
        return np.asarray(jnp.concatenate([np.sqrt(wt.pde / len(flat)) * res,
                                           np.sqrt(wt.boundary / bc.size) * bc, wt.ridge * jnp.asarray(w)]))

    x0 = np.asarray(out.weights[0]) * (1.0 + 0.05 * np.random.default_rng(0).normal(size=b.shape[-1]))
    ref = scipy.optimize.least_squares(r, x0, xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    np.testing.assert_allclose(out.weights[0], ref, rtol=1e-6, atol=1e-6 * np.max(np.abs(ref)))


def test_unknown_initial_mode_is_refused(unchecked):
    with pytest.raises(ValueError, match="initial_condition must be one of 'rows', 'construction'; got 'exact'"):
        HardConstraint(PDE, GRID, (1, 1), 10, initial_condition="exact")


def test_columnwise_transpose_matches_plain_autodiff():
    """``_columns`` (linear parts with a column-at-a-time VJP) has the VJP of
    the plain vmap, also for the extra arguments (here entering as a factor)."""
    from pihc.linearise import _columns

    def f(u, a):
        return {"d": jnp.diff(u, axis=1) * a[None, :], "edge": u[:, 0] * a[0] + u[0, -1]}

    rng = np.random.default_rng(0)
    B = jnp.asarray(rng.normal(size=(5, 7, 3)))
    a = jnp.asarray(rng.normal(size=6))
    plain = lambda B, a: jax.vmap(lambda u: f(u, a), in_axes=-1, out_axes=-1)(B)  # noqa: E731
    out, vjp = jax.vjp(lambda B, a: _columns(f, None, B, a), B, a)
    ref, vjp_ref = jax.vjp(plain, B, a)
    ct = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), ref)
    for got, want in zip(jax.tree.leaves((out, vjp(ct))), jax.tree.leaves((ref, vjp_ref(ct)))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)


def expert(hc, b, u0, key, k) -> ExpertProblem:
    """Expert k's problem, taken from the layer's stacked ones."""
    problem = hc.problem(b, u0, key)
    p = problem.experts(problem.linearise())
    return eqx.tree_at(lambda q: (q.phi, q.c, q.row_scale), p, (p.phi[k], p.c[k], p.row_scale[k]))


@pytest.mark.parametrize("block", [None, 7])
def test_normal_equations_with_the_rows_gram_match_the_stacked_residual(block):
    """The solver's normal equations (rows' Gram precomputed) equal those of
    the stacked residual and its Jacobian by autodiff, whether the points are
    summed in one block (the default for so small a ``Phi``) or in blocks of 7
    (60 = 8 x 7 + 4)."""
    b = smooth_basis(seed=2)
    u0 = jnp.full(GRID.shape[1], 0.1)
    hc = HardConstraint(PDE, GRID, (1, 2), 60, row_weights=WEIGHTS)
    p = dataclasses.replace(expert(hc, b, u0, jax.random.key(0), 1), block=block)
    w = jnp.asarray(np.random.default_rng(3).normal(size=b.shape[-1]))
    cost, g, A = p.normal_equations(w, p.rows_gram())
    r, J = p.residual(w), jax.jacfwd(p.residual)(w)
    np.testing.assert_allclose(cost, 0.5 * r @ r, rtol=1e-11)
    np.testing.assert_allclose(g, J.T @ r, rtol=1e-10, atol=1e-12 * np.abs(J.T @ r).max())
    np.testing.assert_allclose(A, J.T @ J, rtol=1e-10, atol=1e-12 * np.abs(A).max())


def test_normal_equations_keep_their_precision_at_large_weights():
    """Near a solution with large weights the rows' residual is small while ``R w`` is large. The cost and
    gradient come from that residual, not from the Gram form ``w.(R^T R) w + 2 (R^T r_0).w + r_0.r_0``,
    whose cancellation (error ~ eps |R w|^2, here 1e8 times the cost) stalled the solver short of its
    tolerance on ill-conditioned bases."""
    b = smooth_basis(seed=2)
    hc = HardConstraint(PDE, GRID, (1, 2), 60, row_weights=RowWeights(pde=0.0, initial=1.0, boundary=0.5,
                                                                      ridge=0.0))
    p = expert(hc, b, jnp.full(GRID.shape[1], 0.1), jax.random.key(0), 1)
    rng = np.random.default_rng(7)
    w_true = 1e4 * jnp.asarray(rng.normal(size=b.shape[-1]))
    p = dataclasses.replace(p, rows_offset=-(p.rows @ w_true))  # rows fitted exactly at w_true
    w = w_true + 1e-3 * jnp.asarray(rng.normal(size=b.shape[-1]))
    cost, g, _ = p.normal_equations(w, p.rows_gram())
    r, J = p.residual(w), jax.jacfwd(p.residual)(w)
    assert 0 < 0.5 * r @ r < 1e-4 * float(jnp.sum((p.row_scale * (p.rows @ w)) ** 2))
    np.testing.assert_allclose(cost, 0.5 * r @ r, rtol=1e-9)
    np.testing.assert_allclose(g, J.T @ r, rtol=1e-8, atol=1e-9 * np.abs(J.T @ r).max())


class _AnyCurvature(DiffusionSorption):
    """Diffusion-sorption without its declared curvature pairs: the layer forms the whole per-point matrix."""

    @property
    def curvature_pairs(self):
        return None


def _ns_expert(block):
    grid = navier_stokes_grid(5, 8, 8)
    rng = np.random.default_rng(3)
    b = jnp.asarray(rng.normal(size=grid.shape + (6,)))
    hc = HardConstraint(NavierStokes2D(viscosity=1e-2), grid, (1, 2, 2), 50, initial_condition="construction",
                        row_weights=RowWeights(ridge=1e-3))
    return dataclasses.replace(expert(hc, b, jnp.asarray(rng.normal(size=grid.shape[1:])), jax.random.key(2), 1),
                               block=block)


@pytest.mark.parametrize("block", [None, 7])
@pytest.mark.parametrize("pde", ["diffusion-sorption", "divided", "any pair", "navier-stokes"])
def test_structured_hessian_is_the_hessian_of_the_stacked_residual(block, pde):
    """``ExpertProblem.hessian`` (the structured adjoint's, and the solver's ``J^T J + curvature``) equals
    the Hessian of ``1/2 ||residual||^2`` by autodiff, curvature term included, in one block of points
    or in blocks of 7: from the PDE's declared curvature pairs (diffusion-sorption in both residual
    forms, Navier-Stokes) and from the whole per-point matrix (no pairs declared)."""
    if pde == "navier-stokes":
        p = _ns_expert(block)
        gram = p.rows_gram()
        w = jnp.asarray(np.random.default_rng(5).normal(size=p.phi.shape[-1]))
    else:
        kind = {"diffusion-sorption": PDE, "divided": DiffusionSorption(residual_form="divided"),
                "any pair": _AnyCurvature()}[pde]
        b = smooth_basis(seed=4)
        hc = HardConstraint(kind, GRID, (1, 2), 60, row_weights=WEIGHTS)
        p = dataclasses.replace(expert(hc, b, jnp.full(GRID.shape[1], 0.1), jax.random.key(1), 0), block=block)
        gram = p.rows_gram()
        w = p.row_fit(gram) + 0.05 * jnp.asarray(np.random.default_rng(5).normal(size=b.shape[-1]))
    ref = jax.hessian(lambda v: 0.5 * jnp.sum(p.residual(v) ** 2))(w)
    np.testing.assert_allclose(p.hessian(w, gram), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    J = jax.jacfwd(p.residual)(w)
    S = ref - J.T @ J
    assert np.abs(S).max() > 1e-3 * np.abs(ref).max()  # the curvature is not negligible here
    np.testing.assert_allclose(p.curvature(w), S, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


def test_a_periodic_problem_by_construction_has_no_rows_and_matches_scipy():
    """Navier-Stokes on the torus, the initial condition by construction: the experts carry no initial rows
    (zero for every w) and the PDE has no boundary rows, so each problem is its PDE rows and the ridge alone
    (one zero row weighed 0 stands in for the rows). Each expert's weights equal a scipy solve of exactly
    that, written with the PDE's methods."""
    grid = navier_stokes_grid(5, 8, 8)
    rng = np.random.default_rng(3)
    b = jnp.asarray(rng.normal(size=grid.shape + (6,)))
    u0 = jnp.asarray(rng.normal(size=grid.shape[1:]))
    pde = NavierStokes2D(viscosity=1e-2)
    hc = HardConstraint(pde, grid, (1, 2, 2), 50, initial_condition="construction",
                        row_weights=RowWeights(ridge=1e-3), **TIGHT)
    problem = hc.problem(b, u0, jax.random.key(2))
    lin = problem.linearise()
    np.testing.assert_array_equal(lin.rows, 0.0)
    np.testing.assert_array_equal(lin.rows_offset, 0.0)
    assert lin.rows.shape == (1, 6) and np.all(hc.row_scale() == 0.0)
    out = hc(b, u0, jax.random.key(2))
    assert np.all(np.asarray(out.solution.status) == RESULTS.successful)
    B, offset = pde.parametrise(b, u0, grid)
    s = jnp.asarray(grid.coords("t") / grid.axes[0].hi)[:, None, None]
    for k in range(4):
        flat = np.asarray(out.points[k])

        def r(w):
            u = u0[None] + s * (B @ jnp.asarray(w) + offset)
            res = pde.residual(pde.terms(u, grid)).ravel()[flat]
            return np.asarray(jnp.concatenate([np.sqrt(1.0 / len(flat)) * res, 1e-3 * jnp.asarray(w)]))

        w = np.asarray(out.weights[k])
        ref = scipy.optimize.least_squares(r, w * (1.0 + 0.05 * rng.normal(size=w.shape)), xtol=1e-15,
                                           ftol=1e-15, gtol=1e-15).x
        np.testing.assert_allclose(w, ref, rtol=1e-6, atol=1e-6 * np.max(np.abs(ref)))


def test_curvature_pairs_become_few_groups_of_term_indices():
    """Each unordered pair once, grouped under the term in the most pairs; an unknown name is refused."""
    from pihc.experts import _curvature_groups

    assert _curvature_groups(NavierStokes2D()) == ((1, ((3, 1.0),)), (2, ((4, 1.0),)))
    assert _curvature_groups(PDE) == ((0, ((0, 0.5), (1, 1.0))),)
    assert _curvature_groups(_AnyCurvature()) is None

    class Repeated(DiffusionSorption):
        @property
        def curvature_pairs(self):
            return (("u_t", "u"), ("u", "u_t"), ("u", "u"))

    assert _curvature_groups(Repeated()) == ((0, ((0, 0.5), (1, 1.0))),)

    class Unknown(DiffusionSorption):
        @property
        def curvature_pairs(self):
            return (("u", "w"),)

    with pytest.raises(ValueError, match="each pair names two of its terms"):
        _curvature_groups(Unknown())


@pytest.mark.parametrize("options", [dict(), dict(row_scope="local"), dict(initial_condition="construction"),
                                     dict(overlap=(0, 2), blend=True), dict(expert_loop="sequential")])
def test_structured_adjoint_equals_the_generic_implicit_adjoint(options):
    """The layer's structured adjoint (rank-two cotangents through the
    transposed stencils) and the generic one (autodiff of the optimality
    condition) give the same gradients in the basis, u0 and a PDE constant."""
    b = smooth_basis(seed=6)
    u0 = jnp.asarray(0.1 + 0.03 * np.cos(np.pi * GRID.coords("x")))
    probe = jnp.asarray(np.random.default_rng(2).normal(size=GRID.shape))

    def loss(bb, uu, D, adjoint):
        pde = DiffusionSorption(diffusivity=D)
        hc = HardConstraint(pde, GRID, (1, 4), 40, row_weights=WEIGHTS, adjoint=adjoint,
                            solver=LevenbergMarquardt(rtol=1e-10, atol=1e-14, max_steps=300), **options)
        out = hc(bb, uu, jax.random.key(0))
        return jnp.sum(probe * out.u), out.solution.status

    D = jnp.asarray(PDE.diffusivity)
    grad = eqx.filter_jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, status), g = grad(b, u0, D, StructuredAdjoint())
    assert np.all(np.asarray(status) == RESULTS.successful)
    _, ref = grad(b, u0, D, ImplicitAdjoint())
    for got, want in zip(g, ref):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.abs(want).max())
    assert np.abs(np.asarray(g[2])) > 0  # the PDE constant's gradient is not trivially zero


def test_sequential_experts_equal_the_vmapped_ones():
    """``expert_loop="sequential"`` (each expert's solve to its own convergence)
    gives the vmapped experts' weights, iteration counts and gradient."""
    b = smooth_basis(seed=8)
    u0 = jnp.asarray(0.1 + 0.03 * np.cos(np.pi * GRID.coords("x")))

    def run(loop):
        hc = HardConstraint(PDE, GRID, (1, 4), 40, row_weights=WEIGHTS, expert_loop=loop, **TIGHT)

        def loss(bb):
            out = hc(bb, u0, jax.random.key(3))
            return jnp.sum(out.u ** 2), out

        (_, out), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(b)
        return out, g

    (ref, g_ref), (got, g) = run("vmap"), run("sequential")
    assert np.all(np.asarray(got.solution.status) == RESULTS.successful)
    assert len(set(np.asarray(ref.solution.num_steps).tolist())) > 1  # the experts stop at different steps
    np.testing.assert_array_equal(got.solution.num_steps, ref.solution.num_steps)
    np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-11 * np.abs(g_ref).max())


@pytest.mark.parametrize("initial", ["rows", "construction"])
def test_gradient_with_respect_to_u0_matches_finite_differences(initial):
    """The structured adjoint (``_fit``) also carries the cotangent of u0,
    which enters through the rows' constants (and, by construction, B)."""
    b = smooth_basis(seed=6)
    probe = jnp.asarray(np.random.default_rng(1).normal(size=GRID.shape))
    hc = HardConstraint(PDE, GRID, (1, 2), 60, row_weights=WEIGHTS, initial_condition=initial, **TIGHT)

    @jax.jit
    def loss(u0):
        return jnp.sum(probe * hc(b, u0, jax.random.key(0)).u)

    u0 = jnp.full(GRID.shape[1], 0.1)
    assert np.all(np.asarray(hc(b, u0, jax.random.key(0)).solution.status) == RESULTS.successful)
    g = jax.jit(jax.grad(loss))(u0)
    for i in (0, 7, 31):
        e = jnp.zeros_like(u0).at[i].set(1e-6)
        fd = (loss(u0 + e) - loss(u0 - e)) / 2e-6
        assert abs(g[i] - fd) <= 1e-5 * max(abs(fd), 1e-3), (i, g[i], fd)


def test_blended_experts_form_the_partition_of_unity_of_their_own_predictions():
    """``blend=True``: u = sum_k chi_k (B w_k) + offset with the smoothstep windows, each expert's weights
    those of the unblended layer (the same points, same problems), and gradients by finite differences."""
    from pihc.partition import blend_windows

    b = smooth_basis(seed=5)
    u0 = jnp.full(GRID.shape[1], 0.1)
    plain = HardConstraint(PDE, GRID, (1, 4), 60, row_weights=WEIGHTS, overlap=(0, 3), **TIGHT)
    blended = HardConstraint(PDE, GRID, (1, 4), 60, row_weights=WEIGHTS, overlap=(0, 3), blend=True, **TIGHT)
    key = jax.random.key(3)
    p, q = plain(b, u0, key), blended(b, u0, key)
    np.testing.assert_array_equal(np.asarray(p.weights), np.asarray(q.weights))
    lin = linearise(PDE, b, u0, GRID)
    each = np.einsum("txn,kn->ktx", np.asarray(lin.B), np.asarray(q.weights)) + np.asarray(lin.offset)
    chi = blend_windows(GRID.shape, (1, 4), (0, 3))
    np.testing.assert_allclose(q.u, np.sum(chi * each, axis=0), rtol=1e-12, atol=1e-14)
    # Away from the seams (3 cells) blending changes nothing; at a seam it lies between the two experts.
    core = np.ones(32, bool)
    for c in (8, 16, 24):
        core[c - 3:c + 3] = False
    np.testing.assert_allclose(np.asarray(q.u)[:, core], np.asarray(p.u)[:, core], rtol=1e-13)
    seam = np.asarray(q.u)[:, 5:11]  # between the two experts' values where their windows overlap
    lo, hi = np.minimum(each[0, :, 5:11], each[1, :, 5:11]), np.maximum(each[0, :, 5:11], each[1, :, 5:11])
    assert np.all((seam >= lo - 1e-14) & (seam <= hi + 1e-14))
    assert np.abs(np.asarray(q.u - p.u)).max() > 1e-6  # the experts differ, so the blend does too

    probe = jnp.asarray(np.random.default_rng(1).normal(size=GRID.shape))
    loss = jax.jit(lambda bb: jnp.sum(probe * blended(bb, u0, key).u))
    g = jax.jit(jax.grad(loss))(b)
    for idx in [(3, 7, 0), (6, 9, 2), (8, 16, 5)]:
        fd = (loss(b.at[idx].add(1e-6)) - loss(b.at[idx].add(-1e-6))) / 2e-6
        assert abs(g[idx] - fd) <= 1e-5 * max(abs(fd), 1e-3), (idx, g[idx], fd)
    with pytest.raises(ValueError, match="blend needs an overlap"):
        HardConstraint(PDE, GRID, (1, 4), 10, blend=True)
    with pytest.raises(GridError, match="half a block"):
        HardConstraint(PDE, GRID, (1, 4), 10, overlap=(0, 5), blend=True)
