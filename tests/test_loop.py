"""pihc.training.loop: train, exact resume, the run directory, the tied-experts phase."""

import json

import numpy as np
import pytest
from _tiny import QUIET, checkpoint_leaves, metrics, tiny_config

from pihc.training.config import load_config, to_dict
from pihc.training.io import read_checkpoint_meta
from pihc.training.loop import train


@pytest.mark.parametrize("method", ["sc", "moe"])
def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path, method):
    cfg = tiny_config(tmp_path, method)
    full = train(cfg, tmp_path / "full", progress=False, log=lambda s: None)
    part = train(cfg, tmp_path / "part", max_steps=2, progress=False, log=lambda s: None)
    assert read_checkpoint_meta(part / "checkpoint.eqx")["step"] == 2
    train(cfg, part, resume=True, progress=False, log=lambda s: None)
    assert checkpoint_leaves(full / "checkpoint.eqx") == checkpoint_leaves(part / "checkpoint.eqx")
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


def test_global_steps_train_the_tied_experts_as_one_global_solve_then_the_experts(tmp_path):
    cfg = tiny_config(tmp_path, "moe", constraint__global_steps=2)
    tied = train(cfg, tmp_path / "tied", **QUIET)
    # The tied phase is PI-HC over the union of the experts' points (2 x 40):
    # same initialisation, batches and solver keys, so the same losses.
    hc = train(tiny_config(tmp_path, "hc", constraint__n_points=80), tmp_path / "hc", **QUIET)
    a, b = metrics(tied), metrics(hc)
    assert [r["tied_experts"] for r in a] == [1, 1, 0, 0]
    np.testing.assert_allclose([r["loss"] for r in a[:2]], [r["loss"] for r in b[:2]], rtol=1e-10)
    # After it the two experts solve on their own: step 3 is no longer PI-HC's.
    assert abs(a[2]["loss"] - b[2]["loss"]) > 1e-6 * abs(b[2]["loss"])
    # Resuming inside the tied phase continues it and switches at the same step.
    part = train(cfg, tmp_path / "part", max_steps=1, **QUIET)
    train(cfg, part, resume=True, **QUIET)
    assert checkpoint_leaves(tied / "checkpoint.eqx") == checkpoint_leaves(part / "checkpoint.eqx")
