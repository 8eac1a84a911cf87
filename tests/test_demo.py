"""The demo's config and its step handling (no training: train/evaluate/report are stubbed)."""

import jax

import pihc
from pihc.training import demo, loop, model
from pihc.training.config import load_config
from pihc.training.problems import get_problem


def test_demo_config_is_the_hard_constrained_moe_and_builds_on_its_grid():
    cfg = load_config(demo.DEMO_CONFIG)
    assert cfg.model.method == "moe" and cfg.constraint.blend
    problem = get_problem(cfg.problem)
    grid = problem.grid(cfg.data.shape)
    pde = pihc.DiffusionSorption()
    built = model.build_model(cfg, pde, grid, jax.random.key(0))  # raises if the points do not fit
    assert built.constraint.splits == tuple(cfg.constraint.splits)


def _stub(monkeypatch, tmp_path):
    import pihc.training.evaluation as evaluation
    import pihc.training.report as report

    trained = []
    monkeypatch.setattr(loop, "train", lambda cfg, out, **kw: trained.append(cfg))
    monkeypatch.setattr(evaluation, "evaluate", lambda out: {"rel_l2_mean": 0.0, "rel_l2_std": 0.0})
    monkeypatch.setattr(report, "write_report", lambda out: tmp_path / "report.md")
    return trained


def test_demo_trains_its_config_as_is_by_default(monkeypatch, tmp_path):
    trained = _stub(monkeypatch, tmp_path)
    demo.run_demo(tmp_path / "run", log=lambda s: None)
    assert trained == [load_config(demo.DEMO_CONFIG)]


def test_demo_max_steps_scales_the_schedule_to_match(monkeypatch, tmp_path):
    trained = _stub(monkeypatch, tmp_path)
    full = load_config(demo.DEMO_CONFIG).optim
    demo.run_demo(tmp_path / "run", max_steps=full.steps // 2, log=lambda s: None)
    (cfg,) = trained
    assert cfg.optim.steps == full.steps // 2
    assert cfg.optim.decay_every == round(full.decay_every / 2)
