"""CLI errors, the discretisation floor's sparse Jacobian, the seam mask, the report."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.losses import LossWeights
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.evaluation import seam_mask
from pihc.training.floor import _stacked_residual, discretisation_floor, sparse_jacobian


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pihc.cli", *args], capture_output=True, text=True)


def test_cli_reports_bad_configs_without_a_traceback(tmp_path):
    r = _cli("train", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "neither a file nor a built-in config" in r.stderr
    r = _cli("train", "--config", "diffusion-sorption/moe-small", "--set", "optim.bogus=1",
             "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "unknown key(s) ['bogus']" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
    r = _cli("bench", "nope")
    assert r.returncode != 0 and "unknown benchmark" in r.stderr


def test_cli_bench_runs_the_checkouts_script_or_says_where_the_benchmarks_are(monkeypatch, capsys):
    from pihc import cli

    r = _cli("bench", "generator", "--help")  # the script's own options, found in this checkout
    assert r.returncode == 0 and "--reference-samples" in r.stdout
    monkeypatch.setattr(cli, "find_benchmark", lambda script: None)  # an installed package, no checkout
    assert cli.main(["bench", "generator"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ship with the source repository" in err


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


def test_seam_mask_marks_points_near_expert_boundaries():
    grid = diffusion_sorption_grid(nt=3, nx=16)
    m = seam_mask(grid, (1, 4), 1)
    assert m.shape == grid.shape
    np.testing.assert_array_equal(np.flatnonzero(m[0]), [3, 4, 7, 8, 11, 12])
    assert not seam_mask(grid, (1, 1), 2).any()


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


def test_accuracy_seed_summary_orders_methods_per_seed_and_in_aggregate():
    """``benchmarks/accuracy.py``'s table over seeds (the script loaded as a module, nothing trained)."""
    import runpy
    from pathlib import Path

    seed_summary = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"))["seed_summary"]
    err = {"sc": [0.50, 0.60, 0.55], "hc": [0.020, 0.030, 0.070], "moe": [0.025, 0.020, 0.030]}
    rows = [{"method": m, "seed": s, "rel_l2_mean": v} for m, vals in err.items() for s, v in enumerate(vals)]
    out = seed_summary(rows, [0, 1, 2])
    assert out["ordered_per_seed"] == {0: False, 1: True, 2: True}  # seed 0: moe 2.5% > hc 2.0%
    moe = out["methods"]["moe"]
    assert (moe["mean"], moe["median"], moe["worst"]) == pytest.approx((0.025, 0.025, 0.030))
    assert out["methods"]["hc"]["mean"] == pytest.approx(0.04)
    assert out["markdown"].splitlines()[-1] == "| PI-HC-MoE < PI-HC < PI-SC | no | yes | yes | yes | yes | yes |"
