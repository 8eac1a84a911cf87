"""Training harness: config validation, exact resume, atomic files, failed solves."""

import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.grid import GridError
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.config import Config, ConfigError, from_dict, load_config, to_dict
from pihc.training.io import atomic_write_bytes, load_checkpoint, read_checkpoint_meta, save_checkpoint
from pihc.training.problems import Problem, register_problem
from pihc.training.loop import train
from pihc.training.model import build_model

FINE = diffusion_sorption_grid(nt=9, nx=64, t_max=40.0)


class _TinyData:
    """A small in-memory dataset: heat-like fields u = c0 + (1 - c0) erfc-profile (smooth, in [0, 1])."""

    def __init__(self, n=12):
        from scipy.special import erfc

        m = FINE.mesh()
        t, x = m[..., 0], m[..., 1]
        c0 = np.linspace(0.02, 0.18, n)
        prof = erfc(x / (2 * np.sqrt(5e-4 * (t + 1.0))))
        self.u = np.stack([c + (1 - c) * prof for c in c0])
        self.u[:, 0] = c0[:, None]
        self.pde = DiffusionSorption()
        self.grid = FINE
        self.samples = [f"{i:04d}" for i in range(n)]

    def load(self, idx):
        return self.u[np.asarray(idx)]


register_problem("tiny-test", Problem(open=lambda p: _TinyData(), generate=None,
                                      grid=lambda nt, nx: diffusion_sorption_grid(nt, nx, t_max=40.0)))


def tiny_config(tmp_path, method="moe", **over) -> Config:
    data = tmp_path / "tiny.h5"
    data.write_bytes(b"")  # the registered problem ignores the file's content
    d = {"problem": "tiny-test",
         "data": {"path": str(data), "nt": 9, "nx": 32, "test_samples": 4},
         "model": {"method": method, "width": 8, "modes": [3, 4], "layers": 2, "n_basis": 4},
         "constraint": {"splits": [1, 2], "n_points": 40,
                        "row_weights": {"pde": 40.0, "initial": 32.0, "boundary": 16.0},
                        "solver": {"rtol": 1e-6, "atol": 1e-10}},
         "optim": {"batch": 3, "steps": 4, "decay_every": 2},
         "run": {"checkpoint_every": 2}}
    for k, v in over.items():
        sec, key = k.split("__")
        d.setdefault(sec, {})[key] = v
    return from_dict(Config, d)


def _leaves(path):
    raw = Path(path).read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


@pytest.mark.parametrize("method", ["sc", "moe"])
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, method):
    cfg = tiny_config(tmp_path, method)
    full = train(cfg, tmp_path / "full", progress=False, log=lambda s: None)
    part = train(cfg, tmp_path / "part", max_steps=2, progress=False, log=lambda s: None)
    assert read_checkpoint_meta(part / "checkpoint.eqx")["step"] == 2
    train(cfg, part, resume=True, progress=False, log=lambda s: None)
    assert _leaves(full / "checkpoint.eqx") == _leaves(part / "checkpoint.eqx")
    a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in a], [r["loss"] for r in b], rtol=1e-12)
    for r in a:
        assert {"step", "loss", "step_time_s", "failed_solves"} <= set(r)


def test_run_directory_contents_and_refusal_to_overwrite(tmp_path):
    cfg = tiny_config(tmp_path, "hc")
    run = train(cfg, tmp_path / "run", max_steps=1, progress=False, log=lambda s: None)
    saved = load_config(run / "config.yaml")
    assert to_dict(saved) == to_dict(cfg)
    meta = json.loads((run / "run.json").read_text())
    assert meta["seed"] == cfg.run.seed and "pihc_version" in meta
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, run, progress=False, log=lambda s: None)


def test_config_errors_before_compute(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(Config, {"optim": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="model.method"):
        load_config(None, ["model.method=xyz"])
    # YAML 1.1 reads "3e-3" as a string; a float field takes it as the number
    assert load_config(None, ["optim.lr=3e-3"]).optim.lr == 3e-3
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        load_config(None, ["optim.lr=fast"])
    cfg = tiny_config(tmp_path, "moe", constraint__splits=[1, 3])
    data = _TinyData()
    with pytest.raises(GridError, match="axis x has 32 points; 3 experts do not divide it"):
        build_model(cfg, data.pde, diffusion_sorption_grid(9, 32, t_max=40.0), jax.random.key(0))
    cfg = tiny_config(tmp_path, "moe", model__modes=[3, 40])
    with pytest.raises(ConfigError, match="at most 17 Fourier modes fit"):
        build_model(cfg, data.pde, diffusion_sorption_grid(9, 32, t_max=40.0), jax.random.key(0))
    cfg = tiny_config(tmp_path, "moe", constraint__blend=True)
    with pytest.raises(ConfigError, match="constraint: blend needs an overlap"):
        train(cfg, tmp_path / "noblend", progress=False, log=lambda s: None)
    assert not (tmp_path / "noblend").exists()
    cfg = tiny_config(tmp_path, "moe", data__nx=48)
    with pytest.raises(GridError, match="integer multiple"):
        train(cfg, tmp_path / "bad", progress=False, log=lambda s: None)
    assert not (tmp_path / "bad").exists()
    cfg = tiny_config(tmp_path, "moe", data__path=str(tmp_path / "missing.h5"))
    with pytest.raises(Exception):
        train(cfg, tmp_path / "bad2", progress=False, log=lambda s: None)
    assert not (tmp_path / "bad2").exists()


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.eqx"
    save_checkpoint(target, {"a": jnp.arange(3.0)}, {"step": 1})
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, {"a": jnp.arange(3.0) + 1}, {"step": 2})
    monkeypatch.undo()
    tree, meta = load_checkpoint(target, {"a": jnp.zeros(3)})
    assert meta["step"] == 1 and np.all(np.asarray(tree["a"]) == np.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.eqx"]  # no temp file left
    with pytest.raises(RuntimeError):
        atomic_write_bytes(tmp_path / "x.bin", _raises())


def _raises():
    raise RuntimeError("producer failed")


def test_failed_solves_are_excluded_and_counted(tmp_path):
    """max_steps=1 makes every solve fail: the step reports it and updates nothing."""
    from pihc.training.optim import make_optimizer
    from pihc.training.step import make_step

    cfg = tiny_config(tmp_path, "moe", constraint__solver={"max_steps": 1, "rtol": 1e-14, "atol": 1e-10})
    data = _TinyData()
    grid = diffusion_sorption_grid(9, 32, t_max=40.0)
    model = build_model(cfg, data.pde, grid, jax.random.key(0))
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    u0 = jnp.asarray(grid.restrict(data.u[0], FINE.factors_to(grid)) if False else
                     np.stack([FINE.restrict(u, FINE.factors_to(grid))[0] for u in data.u[:3]]))
    new, _, aux = make_step(cfg, opt, data.pde, grid)(model, state, u0,
                                                        jax.random.split(jax.random.key(1), 3))
    assert int(aux["failed_solves"]) == 3 and float(aux["grad_norm"]) == 0.0
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), eqx.filter(model, eqx.is_inexact_array),
                        eqx.filter(new, eqx.is_inexact_array))
    assert all(jax.tree.leaves(same))
    # After a successful step Adam has momentum; a step whose solves all fail
    # must still leave the parameters and the optimiser state unchanged.
    cfg_ok = tiny_config(tmp_path, "moe")
    good = build_model(cfg_ok, data.pde, grid, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 3)
    good, state, aux = make_step(cfg_ok, opt, data.pde, grid)(good, opt.init(eqx.filter(good, eqx.is_inexact_array)),
                                                              u0, keys)
    assert int(aux["failed_solves"]) == 0 and int(aux["skipped_update"]) == 0
    failing = eqx.tree_at(lambda m: m.backbone, model, good.backbone)
    # The same moments, on the failing model's pytree (its static solver settings differ).
    state = jax.tree.unflatten(jax.tree.structure(opt.init(eqx.filter(failing, eqx.is_inexact_array))),
                               jax.tree.leaves(state))
    assert float(jnp.max(jnp.abs(jax.tree.leaves(state)[1]))) > 0  # Adam has momentum now
    after, state2, aux = make_step(cfg, opt, data.pde, grid)(failing, state, u0, keys)
    assert int(aux["skipped_update"]) == 1
    for a, b in zip(jax.tree.leaves(eqx.filter(failing, eqx.is_inexact_array)) + jax.tree.leaves(state),
                    jax.tree.leaves(eqx.filter(after, eqx.is_inexact_array)) + jax.tree.leaves(state2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_learning_rate_schedule_halves_and_warms_up():
    """lr halves every decay_every steps down to min_lr; a warmup ramps linearly
    from 0 to lr first and shifts the halvings by its length."""
    import dataclasses

    from pihc.training.config import OptimConfig
    from pihc.training.optim import learning_rate_schedule

    base = load_config("diffusion-sorption/moe-small", [])
    opt = OptimConfig(lr=4e-3, decay_every=10, decay_rate=0.5, min_lr=1e-3, steps=100)
    plain = learning_rate_schedule(dataclasses.replace(base, optim=opt))
    np.testing.assert_allclose([float(plain(s)) for s in (0, 9, 10, 19, 20, 30, 99)],
                               [4e-3, 4e-3, 2e-3, 2e-3, 1e-3, 1e-3, 1e-3], rtol=1e-6)
    warm = learning_rate_schedule(dataclasses.replace(base, optim=dataclasses.replace(opt, warmup=4)))
    np.testing.assert_allclose([float(warm(s)) for s in (0, 1, 2, 4, 13, 14, 24)],
                               [0.0, 1e-3, 2e-3, 4e-3, 4e-3, 2e-3, 1e-3], rtol=1e-6, atol=1e-12)
    with pytest.raises(ConfigError, match="warmup must be >= 0"):
        load_config("diffusion-sorption/moe-small", ["optim.warmup=-1"])


def test_init_from_carries_a_coarse_runs_backbone_to_another_grid_and_method(tmp_path):
    from pihc.training.data import prepare_data
    from pihc.training.model import check_init_from, load_backbone
    from pihc.training.run import load_run

    src = train(tiny_config(tmp_path, "hc", data__nx=16), tmp_path / "coarse", max_steps=2,
                progress=False, log=lambda s: None)
    cfg = tiny_config(tmp_path, "moe", model__init_from=str(src))
    _, _, coarse, _ = load_run(src, log=lambda s: None)
    data = prepare_data(cfg, log=lambda s: None)
    fresh = build_model(cfg, data.pde, data.grid, jax.random.key(5))
    model = load_backbone(fresh, src, check_init_from(cfg), data.pde, log=lambda s: None)
    a = jax.tree.leaves(eqx.filter(model.backbone, eqx.is_array))
    b = jax.tree.leaves(eqx.filter(coarse.backbone, eqx.is_array))
    c = jax.tree.leaves(eqx.filter(fresh.backbone, eqx.is_array))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))  # the fresh weights were replaced
    assert model.grid.shape == (9, 32) and coarse.grid.shape == (9, 16)
    # The whole run: its first loss is that of the carried backbone, not of a fresh one.
    run = train(cfg, tmp_path / "fine", max_steps=1, progress=False, log=lambda s: None)
    assert load_config(run / "config.yaml").model.init_from == str(src)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    scratch = train(tiny_config(tmp_path, "moe"), tmp_path / "scratch", max_steps=1, progress=False,
                    log=lambda s: None)
    assert first["loss"] != json.loads((scratch / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_init_from_refuses_a_missing_run_or_another_backbone_before_compute(tmp_path):
    src = train(tiny_config(tmp_path, "hc"), tmp_path / "src", max_steps=1, progress=False, log=lambda s: None)
    missing = tiny_config(tmp_path, "hc", model__init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not a trained run directory"):
        train(missing, tmp_path / "a", progress=False, log=lambda s: None)
    narrow = tiny_config(tmp_path, "hc", model__init_from=str(src), model__width=4,
                         data__path=str(tmp_path / "no-such-data.h5"))
    with pytest.raises(ConfigError, match="width 8 there, 4 here"):
        train(narrow, tmp_path / "b", progress=False, log=lambda s: None)
    scalar = tiny_config(tmp_path, "sc", model__init_from=str(src))
    with pytest.raises(ConfigError, match="outputs 4 there, 1 here"):
        train(scalar, tmp_path / "c", progress=False, log=lambda s: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_evaluate_on_a_finer_grid_keeps_the_backbone_and_scores_against_the_data_there(tmp_path):
    from pihc.training.evaluation import evaluate, predict
    from pihc.training.model import on_grid
    from pihc.training.run import load_run

    run = train(tiny_config(tmp_path, "hc", data__nx=16), tmp_path / "coarse", max_steps=2, progress=False,
                log=lambda s: None)
    own = evaluate(run, plots=False, log=lambda s: None)
    same = evaluate(run, plots=False, grid=(9, 16), json_out=tmp_path / "same.json", log=lambda s: None)
    assert same["rel_l2_mean"] == own["rel_l2_mean"]
    fine = evaluate(run, plots=False, grid=(9, 32), log=lambda s: None)
    assert fine["grid"] == [9, 32] and fine["trained_grid"] == [9, 16]
    assert json.loads((run / "evaluation-9x32.json").read_text())["rel_l2_mean"] == fine["rel_l2_mean"]
    assert json.loads((run / "evaluation.json").read_text())["rel_l2_mean"] == own["rel_l2_mean"]
    # The score, recomputed by hand: the fine data restricted to 9 x 32 (every other cell pair averaged).
    cfg, data, model, _ = load_run(run, log=lambda s: None)
    _, moved, grid = on_grid(cfg, model, data.pde, 9, 32)
    assert moved.constraint.n_points == model.constraint.n_points and grid.shape == (9, 32)
    full = _TinyData().u[data.test_idx]
    truth = full.reshape(len(full), 9, 32, 2).mean(-1)
    u = np.asarray(predict(moved, truth[:, 0], cfg.run.seed).u)
    rel = np.linalg.norm((u - truth).reshape(len(u), -1), axis=1) / np.linalg.norm(truth.reshape(len(u), -1), axis=1)
    np.testing.assert_allclose(fine["rel_l2_mean"], rel.mean(), rtol=1e-10)
    with pytest.raises(GridError, match="with --data"):
        evaluate(run, plots=False, grid=(9, 24), log=lambda s: None)
    # Blended experts keep the physical width of their overlap on the finer grid.
    blended = tiny_config(tmp_path, "moe", data__nx=16, constraint__overlap=[0, 2], constraint__blend=True)
    cfg32, moved, _ = on_grid(blended, build_model(blended, data.pde, data.grid, jax.random.key(0)), data.pde, 9, 32)
    assert cfg32.constraint.overlap == (0, 4) and moved.constraint.overlap == (0, 4) and moved.constraint.blend


def test_restrict_is_the_same_on_numpy_and_inside_jit():
    fine = diffusion_sorption_grid(nt=9, nx=32, t_max=40.0)
    x = np.random.default_rng(0).normal(size=fine.shape)
    f = {"t": 2, "x": 4}
    ref = fine.restrict(x, f)
    assert ref.shape == (5, 8)
    np.testing.assert_allclose(ref[1, 2], x[2, 8:12].mean(), rtol=1e-14)  # every 2nd time, 4-cell averages
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: fine.restrict(v, f))(jnp.asarray(x))), ref, rtol=1e-14)
    np.testing.assert_allclose(fine.restrict(x[:1], f)[0], x[0].reshape(8, 4).mean(1), rtol=1e-14)


def test_loss_coarsen_scores_the_restricted_prediction_on_the_coarse_grid(tmp_path):
    from pihc.losses import LossWeights, physics_loss
    from pihc.training.data import load_initial, prepare_data
    from pihc.training.step import step_inputs

    cfg = tiny_config(tmp_path, "hc", loss__coarsen=[2, 2])
    run = train(cfg, tmp_path / "run", max_steps=1, progress=False, log=lambda s: None)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    # The same first step by hand: the initial model's prediction, restricted with NumPy.
    data = prepare_data(cfg, log=lambda s: None)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(cfg.run.seed + 1))
    idx, keys = step_inputs(cfg, 0, len(data.train_idx))
    u0 = load_initial(cfg, data, data.train_idx)[idx]
    u = np.asarray(jax.vmap(lambda a, k: model(a, k))(jnp.asarray(u0), keys).u)
    f = {"t": 2, "x": 2}
    coarse = data.grid.coarsen(f)
    w = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)
    losses = [float(physics_loss(data.pde, jnp.asarray(data.grid.restrict(v, f)),
                                 jnp.asarray(a.reshape(16, 2).mean(1)), coarse, w)[0]) for v, a in zip(u, u0)]
    assert first["failed_solves"] == 0
    # float32 network, jitted there and not here, and solves converged to rtol 1e-6: agreement to 1e-5.
    np.testing.assert_allclose(first["loss"], np.mean(losses), rtol=1e-5)
    full = train(tiny_config(tmp_path, "hc"), tmp_path / "full", max_steps=1, progress=False, log=lambda s: None)
    full_loss = json.loads((full / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    assert abs(full_loss - first["loss"]) > 1e-3 * first["loss"]  # the fine-grid loss: 100x the tolerance away


def test_loss_coarsen_that_does_not_divide_the_grid_fails_before_compute(tmp_path):
    cfg = tiny_config(tmp_path, "hc", loss__coarsen=[1, 3], data__path=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="does not divide the grid"):
        train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="loss.coarsen needs one factor"):
        load_config(None, ["loss.coarsen=[2]"])
    assert not (tmp_path / "run").exists()


def _metrics(run):
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_global_steps_train_the_tied_experts_as_one_global_solve_then_the_experts(tmp_path):
    quiet = dict(progress=False, log=lambda s: None)
    cfg = tiny_config(tmp_path, "moe", constraint__global_steps=2)
    tied = train(cfg, tmp_path / "tied", **quiet)
    # The tied phase is PI-HC over the union of the experts' points (2 x 40):
    # same initialisation, batches and solver keys, so the same losses.
    hc = train(tiny_config(tmp_path, "hc", constraint__n_points=80), tmp_path / "hc", **quiet)
    a, b = _metrics(tied), _metrics(hc)
    assert [r["tied_experts"] for r in a] == [1, 1, 0, 0]
    np.testing.assert_allclose([r["loss"] for r in a[:2]], [r["loss"] for r in b[:2]], rtol=1e-10)
    # After it the two experts solve on their own: step 3 is no longer PI-HC's.
    assert abs(a[2]["loss"] - b[2]["loss"]) > 1e-6 * abs(b[2]["loss"])
    # Resuming inside the tied phase continues it and switches at the same step.
    part = train(cfg, tmp_path / "part", max_steps=1, **quiet)
    train(cfg, part, resume=True, **quiet)
    assert _leaves(tied / "checkpoint.eqx") == _leaves(part / "checkpoint.eqx")


def test_global_steps_is_refused_without_experts_or_beyond_the_run():
    with pytest.raises(ConfigError, match="global_steps ties experts"):
        load_config(None, ["model.method=hc", "constraint.global_steps=10"])
    with pytest.raises(ConfigError, match=r"global_steps must be in \[0, optim.steps = 4000\]"):
        load_config(None, ["constraint.global_steps=4001"])
    assert load_config(None, ["constraint.global_steps=4000"]).constraint.global_steps == 4000


def _run_benchmark(name, *args, monkeypatch):
    """Run ``benchmarks/NAME.py ARGS`` in this process (so it sees the problems registered here)."""
    import runpy
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(path), *map(str, args)])
    runpy.run_path(str(path), run_name="__main__")


def test_constraint_ablation_reproduces_the_evaluation_and_factor_zero_is_the_rows_projection(tmp_path, monkeypatch):
    """``benchmarks/constraint_ablation.py``: at factor 1 it is ``pihc evaluate``'s prediction; at factor 0
    each expert's weights are the least-squares fit of the initial/boundary rows and the ridge alone, so
    its error equals that of the prediction from numpy's lstsq of those rows built column by column."""
    from pihc.training import evaluate, load_fields, load_run, write_report

    run = train(tiny_config(tmp_path, "moe"), tmp_path / "run", max_steps=2, progress=False, log=lambda s: None)
    ev = evaluate(run, plots=False, log=lambda s: None)
    _run_benchmark("constraint_ablation", "--run", run, "--factors", 0, 1, "--out", tmp_path / "abl.json",
                   monkeypatch=monkeypatch)
    out = json.loads((tmp_path / "abl.json").read_text())["runs"][0]
    zero, one = out["rows"]
    assert (zero["factor"], one["factor"]) == (0.0, 1.0) and out["experts"] == 2
    assert one["rel_l2_mean"] == pytest.approx(ev["rel_l2_mean"], rel=1e-6)
    assert one["weights_change_rel"] == 0.0 and one["solver_steps_mean"] > 0
    assert zero["solver_steps_mean"] == 0.0 and zero["experts_spread_rel"] < 1e-10  # global rows: one fit
    assert zero["weights_change_rel"] > 1e-6  # the PDE rows do move an untrained basis's weights
    assert ev["experts"]["weights_spread_rel"] == pytest.approx(one["experts_spread_rel"], rel=1e-6)
    assert one["experts_spread_rel"] > 1e-6  # each expert fits its own block's PDE rows
    assert f"weights differ from their mean by {100 * one['experts_spread_rel']:.2f}%" in write_report(run).read_text()

    # Factor 0 by hand: every expert's weights are the lstsq fit of the weighted rows and the ridge.
    cfg, data, model, _ = load_run(run, log=lambda s: None)
    con, pde, grid = model.constraint, data.pde, data.grid
    truth = load_fields(cfg, data, data.test_idx)
    u0 = truth[:, 0]
    basis = jax.vmap(model.basis)(jnp.asarray(u0))
    wt = con.row_weights
    rel = []
    for s in range(len(u0)):
        B, off = pde.parametrise(basis[s].astype(jnp.float64), jnp.asarray(u0[s]), grid)
        n_ic, n_bc = len(pde.initial_row_points(grid)), len(pde.boundary_row_points(grid))
        rows = lambda v: np.concatenate([np.sqrt(wt.initial / n_ic) * np.asarray(pde.initial_rows(v, u0[s], grid)),  # noqa: E731
                                         np.sqrt(wt.boundary / n_bc) * np.asarray(pde.boundary_rows(v, grid))])
        r0 = rows(off)
        A = np.stack([rows(off + B[..., n]) - r0 for n in range(B.shape[-1])], axis=1)
        A = np.concatenate([A, wt.ridge * np.eye(B.shape[-1])])
        ref = np.linalg.lstsq(A, -np.concatenate([r0, np.zeros(B.shape[-1])]), rcond=None)[0]
        u = np.asarray(B) @ ref + np.asarray(off)  # one fit for every expert's block
        rel.append(np.linalg.norm(u - truth[s]) / np.linalg.norm(truth[s]))
    assert zero["rel_l2_mean"] == pytest.approx(np.mean(rel), rel=1e-6)
    assert zero["rel_l2_std"] == pytest.approx(np.std(rel), rel=1e-4, abs=1e-9)
    assert abs(zero["rel_l2_mean"] - one["rel_l2_mean"]) > 1e-6 * one["rel_l2_mean"]  # the two are distinguishable
