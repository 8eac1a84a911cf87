"""A PDE pihc does not ship, from its class to a trained and scored model: check_pde, the problem API,
configs naming ``module:Attribute``, ``pihc.train``, and the two examples (Burgers, Allen-Cahn)."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pihc
from pihc import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def examples(monkeypatch):
    """The repository's examples importable (as from the repository root)."""
    monkeypatch.syspath_prepend(str(REPO))
    from examples import allen_cahn, burgers

    return burgers, allen_cahn


def cole_hopf(g, nu=0.02, a=0.5, k=2 * np.pi):
    """Burgers' exact periodic solution u = -2 nu phi_x / phi, phi = 1 + a exp(-nu k^2 t) cos(k x)."""
    t, x = g.mesh()[..., 0], g.mesh()[..., 1]
    e = a * np.exp(-nu * k**2 * t)
    return 2 * nu * k * e * np.sin(k * x) / (1 + e * np.cos(k * x))


def logistic(g, u0=0.3, r=1.0):
    """Allen-Cahn's exact space-uniform solution: u' = r (u - u^3)."""
    t = g.mesh()[..., 0]
    e = np.exp(2 * r * t)
    return u0 * np.sqrt(e) / np.sqrt(1 + u0**2 * (e - 1))


def test_check_pde_passes_the_examples_and_measures_the_order_on_exact_solutions(examples):
    burgers, allen_cahn = examples
    grid = burgers.BurgersProblem().grid((17, 32))
    rep = pihc.check_pde(burgers.Burgers(0.02), grid, exact=cole_hopf)
    assert rep["failures"] == [] and max(rep["terms_affine_error"].values()) < 1e-12
    assert rep["n_initial_rows"] == 32 and rep["n_boundary_rows"] == 0
    # Spectral in x, BDF2 in time (its first row BDF1): the RMS residual falls at order 1.5 to 2.
    assert rep["exact"]["residual_rms"] < 1e-2 and 1.4 < rep["exact"]["residual_order"] < 2.6
    grid = allen_cahn.AllenCahnProblem().grid((17, 8))
    rep = pihc.check_pde(allen_cahn.AllenCahn(5e-3, 1.0), grid, exact=logistic)
    assert rep["failures"] == [] and 1.4 < rep["exact"]["residual_order"] < 2.6


def test_check_pde_names_what_is_wrong(examples):
    burgers, _ = examples
    grid = burgers.BurgersProblem().grid((9, 16))

    class Squared(burgers.Burgers):  # u^2 as a term: not affine
        @property
        def term_names(self):
            return ("u", "u_t", "u_x", "u_xx", "u2")

        def terms(self, u, grid):
            return jnp.concatenate([super().terms(u, grid), (u**2)[..., None]], axis=-1)

    with pytest.raises(pihc.PDEContractError, match="term 'u2' is not affine"):
        pihc.check_pde(Squared(), grid)

    class Mixing(burgers.Burgers):  # the residual reads a neighbour's terms
        def residual(self, terms):
            return super().residual(terms) + jnp.roll(terms[..., 0], 1, axis=0)

    with pytest.raises(pihc.PDEContractError, match="not pointwise"):
        pihc.check_pde(Mixing(), grid)

    class Declared(burgers.Burgers):  # u u_x: the one pair with a second derivative
        @property
        def curvature_pairs(self):
            return (("u_x", "u"),)

    assert pihc.check_pde(Declared(), grid)["curvature_undeclared_error"] == 0.0

    class Undeclared(burgers.Burgers):
        @property
        def curvature_pairs(self):
            return (("u", "u"),)

    with pytest.raises(pihc.PDEContractError, match=r"leaves out \[\('u', 'u_x'\)\]"):
        pihc.check_pde(Undeclared(), grid)

    class Misnamed(burgers.Burgers):
        @property
        def curvature_pairs(self):
            return (("u", "w_x"),)

    with pytest.raises(pihc.PDEContractError, match="curvature_pairs has"):
        pihc.check_pde(Misnamed(), grid)

    # A wrong sign of the viscous term: the residual on the exact solution does not shrink with refinement.
    rep = pihc.check_pde(burgers.Burgers(-0.02), grid, exact=cole_hopf, raise_on_failure=False)
    assert any("does not shrink" in f for f in rep["failures"])


def test_reference_solvers_match_exact_solutions(examples):
    burgers, allen_cahn = examples
    p = burgers.BurgersProblem(viscosity=0.02, t_end=0.5)
    grid = p.grid((11, 32))
    exact = cole_hopf(grid)
    u = p.solve(exact[None, 0], grid)[0]
    assert np.max(np.abs(u - exact)) < 1e-9 * np.max(np.abs(exact))
    q = allen_cahn.AllenCahnProblem(t_end=2.0)
    grid = q.grid((11, 16))
    exact = logistic(grid)
    u = q.solve(exact[None, 0], grid)[0]
    assert np.max(np.abs(u - exact)) < 1e-9


def test_initial_conditions_are_functions_of_the_seed_on_every_grid(examples):
    burgers, _ = examples
    p = burgers.BurgersProblem()
    coarse, fine = p.grid((9, 32)), p.grid((9, 128))
    a, b = p.initial_conditions([3, 4], coarse), p.initial_conditions([3, 4], fine)
    np.testing.assert_allclose(a, b[:, ::4], rtol=0, atol=1e-14)  # periodic points: every 4th
    assert np.all(np.abs(b) <= p.amplitude) and not np.allclose(b[0], b[1])


def _tiny_overrides(tmp_path, name):
    return [f"data.path={tmp_path / name}-ref.h5", "data.nt=9", "data.nx=32", "data.generate.nt=9",
            "data.generate.nx=32", "data.generate.samples=40", "data.test_samples=4", "model.width=8",
            "model.modes=[3, 6]", "model.layers=2", "model.n_basis=8", "constraint.n_points=150",
            "optim.batch=4", "optim.steps=30", "optim.lr=1e-2", "optim.decay_every=100", "run.eval_every=1",
            "run.eval_samples=4", "run.checkpoint_every=100"]


@pytest.mark.parametrize("name", ["burgers", "allen_cahn"])
def test_examples_train_from_the_command_line_and_residual_and_error_decrease(tmp_path, examples, capsys,
                                                                              monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--config", str(REPO / "examples" / f"{name}.yaml"), "--out", str(run), "--quiet"]
    for o in _tiny_overrides(tmp_path, name):
        args += ["--set", o]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the one-line summary
    m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 30 and summary["final_loss"] == m[-1]["loss"]
    assert summary["heldout_rel_l2"] == m[-1]["heldout_rel_l2"]
    assert Path(summary["report"]).is_file() and (run / "plots" / "loss.png").is_file()
    # Physics-informed: the initial condition by construction, no failed solve, and in 30 steps
    # both the PDE residual and the held-out error (against the spectral reference) fall.
    assert all(r["initial"] == 0.0 and r["failed_solves"] == 0 for r in m)
    pde = [r["pde"] for r in m]
    assert np.mean(pde[-5:]) < 0.5 * np.mean(pde[:5])
    held = [r["heldout_rel_l2"] for r in m]
    assert np.mean(held[-3:]) < 0.85 * np.mean(held[:3])
    # The reference file holds the held-out samples only (seeds 36-39 of 40), made by the solver.
    assert cli.main(["data", "info", str(tmp_path / f"{name}-ref.h5")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["samples"] == 4 and info["seeds"] == [36, 39] and info["shape"] == [9, 32]
    if name == "burgers":  # `pihc evaluate` scores the same 4 samples with the same solver keys
        assert cli.main(["evaluate", str(run), "--no-plots"]) == 0
        ev = json.loads((run / "evaluation.json").read_text())
        assert ev["rel_l2_mean"] == pytest.approx(held[-1], rel=1e-6)


def test_generate_writes_the_held_out_reference_of_a_config(tmp_path, examples, capsys, monkeypatch):
    burgers, _ = examples
    monkeypatch.chdir(tmp_path)
    cfg = str(REPO / "examples" / "burgers.yaml")
    sets = ["--set", "data.generate.nt=9", "--set", "data.generate.nx=16", "--set", "data.nt=9", "--set", "data.nx=16",
            "--set", "data.test_samples=3"]
    assert cli.main(["generate", "--config", cfg, *sets, "--samples", "10", "--out", "ref.h5", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == "ref.h5"
    from pihc.data.reference import open_reference

    ds = open_reference("ref.h5")
    p = burgers.BurgersProblem()
    grid = p.grid((9, 16))
    assert ds.grid == grid and list(ds.seeds) == [7, 8, 9]  # the last 3 of 10 samples
    np.testing.assert_allclose(ds.load([0, 2]), p.solve(p.initial_conditions([7, 9], grid), grid), rtol=0,
                               atol=1e-13)
    # Another problem's options are refused by name when the file is read for a config.
    from pihc.training.problems import get_problem

    with pytest.raises(ValueError, match="viscosity"):
        get_problem("examples.burgers:BurgersProblem", {"viscosity": 0.05}).open("ref.h5")
    assert cli.main(["generate", "--config", cfg, *sets, "--out", "ref.h5", "--quiet"]) == 2  # exists


def test_a_problem_from_the_working_directory_trains_without_any_data(tmp_path, monkeypatch):
    """A module beside the config, no solver: training samples initial conditions and writes no data."""
    (tmp_path / "heat_problem.py").write_text('''
import jax.numpy as jnp, numpy as np, pihc
from pihc import derivatives

class Heat(pihc.PDE):
    kappa: float = 0.01
    @property
    def term_names(self): return ("u_t", "u_xx")
    def terms(self, u, grid):
        return jnp.stack([derivatives.diff1_backward(u, 0, grid.spacing("t")),
                          derivatives.diff2(u, 1, grid.spacing("x"), periodic=True)], -1)
    def residual(self, terms): return terms[..., 0] - self.kappa * terms[..., 1]

class HeatProblem(pihc.Problem):
    kappa: float = 0.01
    @property
    def pde(self): return Heat(self.kappa)
    def grid(self, shape):
        return pihc.Grid((pihc.Axis("t", shape[0], 0.0, 1.0), pihc.Axis("x", shape[1], 0.0, 1.0, "periodic")))
    def initial_condition(self, seed, grid):
        return np.sin(2 * np.pi * (grid.coords("x") + 0.1 * seed))
''')
    (tmp_path / "heat.yaml").write_text("problem: heat_problem:HeatProblem\nproblem_options: {kappa: 0.02}\n"
                                        "data: {path: data/none.h5, nt: 9, nx: 16, generate: {samples: 12}, test_samples: 2}\n"
                                        "model: {method: hc, width: 8, modes: [3, 4], layers: 1, n_basis: 4}\n"
                                        "constraint: {n_points: 50, initial_condition: construction}\n"
                                        "optim: {batch: 2, steps: 2}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert cli.main(["train", "--config", "heat.yaml", "--out", "run", "--quiet"]) == 0
    assert not (tmp_path / "data").exists()  # no solution was read or made
    assert (tmp_path / "run" / "checkpoint.eqx").is_file()
    from pihc.training.run import load_run

    cfg, data, model, _ = load_run(tmp_path / "run", log=lambda s: None)
    assert data.pde.kappa == 0.02 and cfg.problem_options == {"kappa": 0.02}
    assert model.constraint.pde.kappa == 0.02 and list(data.train_idx) == list(range(10))
    # Scoring needs a reference: without a solver or a file, one line says so; nothing to generate.
    assert cli.main(["evaluate", "run"]) == 2
    assert cli.main(["generate", "--config", "heat.yaml"]) == 2


def test_unknown_modules_attributes_and_options_are_one_line(tmp_path, examples, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [("examples.nope:X", "no module named 'examples.nope'"),
             ("examples.burgers:Burger", "has no attribute 'Burger' (its pihc.Problem classes: BurgersProblem)"),
             ("examples.burgers:Burgers", "not a pihc.Problem subclass"),
             ("burgers", "unknown problem 'burgers'")]
    for spec, message in cases:
        assert cli.main(["train", "--config", str(REPO / "examples" / "burgers.yaml"), "--set",
                         f"problem={spec}", "--out", "run", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert cli.main(["train", "--config", str(REPO / "examples" / "burgers.yaml"), "--set",
                     "problem_options.viscosty=0.1", "--out", "run", "--quiet"]) == 2
    assert "unknown key(s) ['viscosty']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_pihc_train_returns_the_run_and_the_trained_model(tmp_path, examples, monkeypatch):
    monkeypatch.chdir(tmp_path)
    over = [o for o in _tiny_overrides(tmp_path, "nb") if not o.startswith("run.eval")] + ["optim.steps=2"]
    run, model = pihc.train("examples.burgers:BurgersProblem", tmp_path / "nb", viscosity=0.03, overrides=over,
                            progress=False, log=lambda s: None)
    assert (run / "checkpoint.eqx").is_file() and model.constraint.pde.viscosity == 0.03
    assert model.constraint.initial_condition == "construction"  # the default for a new PDE
    grid = model.constraint.grid
    u0 = examples[0].BurgersProblem().initial_condition(7, grid)
    out = model(jnp.asarray(u0), jax.random.key(0))
    assert np.all(np.asarray(out.constrained.solution.status) == 0)
    np.testing.assert_allclose(out.u[0], u0, atol=1e-12)


def test_importing_pihc_does_not_import_the_training_harness():
    code = "import sys, pihc; print('pihc.training' in sys.modules, callable(pihc.train))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["False", "True"], r.stderr
