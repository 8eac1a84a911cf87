"""benchmarks/*.py, run in this process on the tiny problem (or loaded as modules, nothing trained)."""

import json
import runpy
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _tiny import tiny_config

from pihc.training.loop import train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_accuracy_seed_summary_orders_methods_per_seed_and_in_aggregate():
    """``benchmarks/accuracy.py``'s table over seeds (the script loaded as a module, nothing trained)."""
    seed_summary = runpy.run_path(str(BENCHMARKS / "accuracy.py"))["seed_summary"]
    err = {"sc": [0.50, 0.60, 0.55], "hc": [0.020, 0.030, 0.070], "moe": [0.025, 0.020, 0.030]}
    rows = [{"method": m, "seed": s, "rel_l2_mean": v} for m, vals in err.items() for s, v in enumerate(vals)]
    out = seed_summary(rows, [0, 1, 2])
    assert out["ordered_per_seed"] == {0: False, 1: True, 2: True}  # seed 0: moe 2.5% > hc 2.0%
    moe = out["methods"]["moe"]
    assert (moe["mean"], moe["median"], moe["worst"]) == pytest.approx((0.025, 0.025, 0.030))
    assert out["methods"]["hc"]["mean"] == pytest.approx(0.04)
    assert out["markdown"].splitlines()[-1] == "| PI-HC-MoE < PI-HC < PI-SC | no | yes | yes | yes | yes | yes |"


def _run_benchmark(name, *args, monkeypatch):
    """Run ``benchmarks/NAME.py ARGS`` in this process (so it sees the problems registered here)."""
    path = BENCHMARKS / f"{name}.py"
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
        a0 = jnp.asarray(u0[s])
        B, off = pde.parametrise(basis[s].astype(jnp.float64), a0, grid)
        n_ic, n_bc = len(pde.initial_row_points(grid)), len(pde.boundary_row_points(grid))
        rows = lambda v: np.concatenate([np.sqrt(wt.initial / n_ic) * np.asarray(pde.initial_rows(v, a0, grid)),  # noqa: E731
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


def test_step_cost_times_a_trained_run_with_its_settings_and_the_set_options_on_top(tmp_path, monkeypatch):
    """``benchmarks/step_cost.py --trained moe=RUN``: the run's layer (40 points, where the config gives 30),
    with the command's --set options applied to it (experts one after the other); the others from --config."""
    from pihc.training.config import save_config

    run = train(tiny_config(tmp_path, "moe"), tmp_path / "run", max_steps=2, progress=False, log=lambda s: None)
    save_config(tiny_config(tmp_path, "moe", constraint__n_points=30), tmp_path / "tiny.yaml")
    _run_benchmark("step_cost", "--config", tmp_path / "tiny.yaml", "--set", "constraint.expert_loop=sequential",
                   "--trained", f"moe={run}", "--repeats", 1, "--out", tmp_path / "cost.json", monkeypatch=monkeypatch)
    out = json.loads((tmp_path / "cost.json").read_text())["methods"]
    assert out["moe"]["layer"] == {"splits": [1, 2], "n_points": 40, "time_slabs": 1, "expert_loop": "sequential"}
    assert out["hc"]["layer"]["n_points"] == 30 and out["sc"]["layer"] is None
    assert out["moe"]["solver_steps_mean"] > 0


def test_speed_points_times_each_variant_and_skips_points_a_block_cannot_hold(tmp_path, monkeypatch):
    """``benchmarks/speed_points.py`` on the tiny problem: the variants' sampled points, the skip of an
    expert asked for more points than its block holds, and the log-log slope of the times."""
    from pihc.training.config import save_config

    save_config(tiny_config(tmp_path, "moe"), tmp_path / "tiny.yaml")
    _run_benchmark("speed_points", "--config", tmp_path / "tiny.yaml", "--points", 8, 300, "--repeats", 1,
                   "--out", tmp_path / "speed.json", monkeypatch=monkeypatch)
    out = json.loads((tmp_path / "speed.json").read_text())
    rows = {(r["points"], r["variant"]): r for r in out["rows"]}
    assert [rows[8, v]["points_per_expert"] for v in ("hc", "moe", "moe_split")] == [8, 8, 4]
    assert rows[8, "hc"]["experts"] == 1 and rows[8, "moe"]["experts"] == 2
    for v in ("hc", "moe", "moe_split"):
        assert rows[8, v]["train_s"] > 0 and rows[8, v]["infer_s"] > 0 and rows[8, v]["failed_solves"] == 0
    assert rows[8, "moe"]["speedup_over_hc_train"] == rows[8, "hc"]["train_s"] / rows[8, "moe"]["train_s"]
    # The tiny grid (9 x 32) has 8 x 32 = 256 residual points, 128 in each expert's block of 8 x 16: 300
    # points fit neither one global solve, nor 300 or 150 per expert; each variant is skipped, saying why.
    for v, n in (("hc", 300), ("moe", 300), ("moe_split", 150)):
        assert f"{n} points per expert requested" in rows[300, v]["skipped"] and "train_s" not in rows[300, v]
    assert (tmp_path / "speed.png").stat().st_size > 0


def test_loglog_slope_recovers_a_power_law():
    slope = runpy.run_path(str(BENCHMARKS / "speed_points.py"))["loglog_slope"]
    assert slope([1e2, 1e3, 1e4], [2e-4, 2e-2, 2.0]) == pytest.approx(2.0)
    assert slope([1e2, 1e3, 1e4], [1.0, None, 10.0]) == pytest.approx(0.5)
    assert slope([1e2], [1.0]) is None


def test_gpu_runs_reads_variants_and_tells_which_runs_to_start_resume_or_evaluate(tmp_path):
    """``benchmarks/gpu_runs.py``: the variants file and the state of a run directory that decides whether
    the next call trains it anew, resumes it from its checkpoint, evaluates it or leaves it."""
    mod = runpy.run_path(str(BENCHMARKS / "gpu_runs.py"))
    f = tmp_path / "v.txt"
    f.write_text("# comment\n\nsc-s0 diffusion-sorption/sc   # trailing\nmoe-s1 diffusion-sorption/moe --set run.seed=1"
                 " --max-steps 800\n")
    rest = ["--set", "run.seed=1", "--max-steps", "800"]
    assert mod["read_variants"](f) == [("sc-s0", "diffusion-sorption/sc", []),
                                       ("moe-s1", "diffusion-sorption/moe", rest)]
    assert mod["_flag_values"](rest, "--set") == ["run.seed=1"] and mod["_flag_values"](rest, "--max-steps") == ["800"]
    run = tmp_path / "run"
    state = lambda: mod["run_state"](run, 10)  # noqa: E731
    assert state() == "new"
    run.mkdir()
    (run / "checkpoint.eqx").write_bytes(b"x")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 5)) + '{"st')
    assert mod["last_step"](run) == 4 and state() == "partial"  # a torn last line is skipped
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 11)))
    assert state() == "trained"
    (run / "evaluation.json").write_text("{}")
    assert state() == "evaluated"


@pytest.mark.parametrize("text, match", [
    ("", "holds no variant"),
    ("# only a comment\n", "holds no variant"),
    ("sc-s0\n", "v.txt:1: variant 'sc-s0' names no config"),
    ("sc-s0 diffusion-sorption/sc --set\n", "v.txt:1: after the config only `--set key=value` pairs"),
    ("sc-s0 diffusion-sorption/sc --steps 5\n", "v.txt:1: after the config only `--set key=value` pairs"),
    ("sc-s0 diffusion-sorption/sc --max-steps 0\n", "and one `--max-steps N` (N >= 1) may follow"),
    ("sc-s0 diffusion-sorption/sc --max-steps 5 --max-steps 6\n", "and one `--max-steps N`"),
    ("a diffusion-sorption/sc\n\na diffusion-sorption/hc\n", "v.txt:3: variant name 'a' is used twice"),
    ("a nope/sc\n", "neither a file nor a built-in config"),
    ("a diffusion-sorption/sc --set optim.bogus=1\n", "v.txt: variant 'a': config.optim: unknown key(s) ['bogus']"),
])
def test_gpu_runs_refuses_a_bad_variants_file_by_line_before_anything_runs(tmp_path, monkeypatch, capsys, text,
                                                                           match):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.txt").write_text(text)
    assert match in _refused("gpu_runs", "v.txt", "--root", "r", "--out", "o", monkeypatch=monkeypatch,
                             capsys=capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.txt"]  # no run or output directory made


def test_span_fit_is_exact_for_a_field_in_the_span_of_each_block():
    """``benchmarks/basis_diagnostics.py``'s span fit: a field made of one weight vector per block is
    fitted exactly block by block, and by one global weight vector only to the extent the blocks agree."""
    span_fit = runpy.run_path(str(BENCHMARKS / "basis_diagnostics.py"))["span_fit"]
    from pihc.partition import partition, unpartition

    rng = np.random.default_rng(0)
    B, offset = rng.standard_normal((4, 6, 8, 3)), rng.standard_normal((4, 6, 8))
    w = rng.standard_normal((4, 3))  # splits (1, 2, 2): four blocks, each its own weights
    u = unpartition(np.einsum("k...n,kn->k...", np.asarray(partition(B, (1, 2, 2))), w), (1, 2, 2)) + offset
    assert span_fit(B, offset, np.asarray(u), (1, 2, 2)) < 1e-12
    assert span_fit(B, offset, np.asarray(u), (1, 1, 1)) > 0.1
    same = np.einsum("...n,n->...", B, w[0]) + offset
    assert span_fit(B, offset, same, (1, 1, 1)) < 1e-12


def test_accuracy_refuses_to_reuse_a_run_of_another_config(tmp_path, monkeypatch, capsys):
    """``benchmarks/accuracy.py`` reuses finished runs in ``--out-dir``; one made by another config is
    refused by name, before any training, rather than scored as this config's."""
    from pihc.training.config import load_config, save_config

    run = tmp_path / "sc-small-s0"
    run.mkdir()
    save_config(load_config("diffusion-sorption/sc-small", ["run.seed=0", "optim.lr=0.002"]), run / "config.yaml")
    with pytest.raises(SystemExit) as e:
        _run_benchmark("accuracy", "--configs", "diffusion-sorption/sc-small", "--seeds", 0, "--floor-samples", 0,
                       "--out-dir", tmp_path, "--json", tmp_path / "a.json", monkeypatch=monkeypatch)
    assert "holds a run of another config than diffusion-sorption/sc-small (optim.lr: 0.002 there" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc-small-s0"] and not (run / "metrics.jsonl").exists()


def test_accuracy_refuses_a_config_the_layer_cannot_build_with_one_line(tmp_path, monkeypatch, capsys):
    """A blend halo wider than half a block is refused as ``pihc train`` refuses it: one ``error:`` line, no
    traceback, nothing trained, and the missing dataset not made first."""
    monkeypatch.chdir(tmp_path)  # --small makes its tiny dataset under ./benchmarks/out
    msg = _refused("accuracy", "--small", "--configs", "diffusion-sorption/moe-small", "--set",
                   "constraint.overlap=[0,100]", "--floor-samples", 0, "--out-dir", tmp_path / "runs",
                   "--json", tmp_path / "a.json", monkeypatch=monkeypatch, capsys=capsys)
    assert "blending halo of 100 points" in msg
    assert not (tmp_path / "a.json").exists() and not any((tmp_path / "runs").glob("*/metrics.jsonl"))
    assert not (tmp_path / "benchmarks/out/diffusion-sorption-tiny.h5").exists()


def test_accuracy_checks_every_config_before_the_first_trains(tmp_path, monkeypatch, capsys):
    """The second of two configs is refused before the first one trains."""
    monkeypatch.chdir(tmp_path)
    msg = _refused("accuracy", "--small", "--configs", "diffusion-sorption/sc-small", "nope/moe",
                   "--floor-samples", 0, "--out-dir", tmp_path / "runs", "--json", tmp_path / "a.json",
                   monkeypatch=monkeypatch, capsys=capsys)
    assert "neither a file nor a built-in config" in msg and not (tmp_path / "runs").exists()


def _refused(name, *args, monkeypatch, capsys) -> str:
    """Run the script as ``python benchmarks/NAME.py ARGS`` does and return its one ``error:`` line (status 2),
    the last of its stderr (a progress bar of data it made may come before it)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _run_benchmark(name, *args, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert e.value.code == 2 and "Traceback" not in err and err.endswith("\n")
    assert [x for x in lines if x.startswith("error: ")] == lines[-1:]
    return lines[-1]


@pytest.mark.parametrize("name, args, match", [
    ("step_cost", ["--config", "nope/moe"], "neither a file nor a built-in config"),
    ("step_memory", ["--config", "nope/moe"], "neither a file nor a built-in config"),
    ("step_profile", ["--config", "nope/moe"], "neither a file nor a built-in config"),
    ("speed_points", ["--config", "nope/moe"], "neither a file nor a built-in config"),
    ("accuracy", ["--configs", "nope/moe"], "neither a file nor a built-in config"),
    ("basis_diagnostics", ["--run", "no-such-run"], "no-such-run"),
    ("constraint_ablation", ["--run", "no-such-run"], "no-such-run"),
    ("gpu_runs", ["no-such-variants.txt"], "no-such-variants.txt is not a file; give a variants file"),
])
def test_benchmarks_refuse_bad_input_with_one_line_before_any_compute(tmp_path, monkeypatch, capsys, name, args,
                                                                      match):
    monkeypatch.chdir(tmp_path)  # anything a script wrote would land here
    assert match in _refused(name, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
