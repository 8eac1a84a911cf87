"""pihc.training.evaluation: the seam mask; scores on the trained grid and on a finer one."""

import json

import jax
import numpy as np
import pytest
from _tiny import TinyData, tiny_config

from pihc.grid import GridError
from pihc.pdes import diffusion_sorption_grid
from pihc.training.evaluation import seam_mask
from pihc.training.loop import train
from pihc.training.model import build_model


def test_seam_mask_marks_points_near_expert_boundaries():
    grid = diffusion_sorption_grid(nt=3, nx=16)
    m = seam_mask(grid, (1, 4), 1)
    assert m.shape == grid.shape
    np.testing.assert_array_equal(np.flatnonzero(m[0]), [3, 4, 7, 8, 11, 12])
    assert not seam_mask(grid, (1, 1), 2).any()
    # Time slabs sharing level 4 of 9: rows 3 and 4 end the first slab, rows 5 and 6 start the next.
    slabbed = seam_mask(diffusion_sorption_grid(nt=9, nx=16), (1, 1), 2, time_cuts=[4])
    np.testing.assert_array_equal(np.flatnonzero(slabbed.any(axis=1)), [3, 4, 5, 6])
    assert slabbed[3:7].all()


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
    full = TinyData().u[data.test_idx]
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


def test_a_run_trained_on_a_time_window_is_scored_on_the_whole_grid_and_after_the_window(tmp_path):
    from pihc.training.evaluation import evaluate, predict
    from pihc.training.run import load_run

    # The tiny grid's times are 0, 5, ..., 40: the window t <= 25 holds the first 6 of 9.
    cfg = tiny_config(tmp_path, "moe", data__nx=16, data__train_until=25.0)
    run = train(cfg, tmp_path / "window", max_steps=2, progress=False, log=lambda s: None)
    _, data, model, _ = load_run(run, log=lambda s: None)
    assert data.grid.shape == (6, 16) and data.grid.axes[0].hi == 25.0 and data.whole_grid.shape == (9, 16)
    # The time input means the same on the window and on the whole interval: t / 40 in both.
    assert model.extent[0] == (0.0, 40.0)
    out = evaluate(run, plots=False, log=lambda s: None)
    assert out["grid"] == [9, 16] and out["trained_grid"] == [6, 16]
    assert out["window"]["t_from"] == 25.0 and out["window"]["t_to"] == 40.0 and out["window"]["times"] == 3
    # The window's score recomputed by hand from the whole-grid prediction (times 30, 35, 40).
    cfg, data, model, _ = load_run(run, log=lambda s: None)
    truth = TinyData().u[data.test_idx].reshape(4, 9, 16, 4).mean(-1)
    whole = evaluate(run, plots=False, grid=(9, 16), json_out=tmp_path / "whole.json", log=lambda s: None)
    np.testing.assert_allclose(whole["rel_l2_mean"], out["rel_l2_mean"], rtol=1e-12)
    from pihc.training.model import on_grid

    _, moved, _ = on_grid(cfg, model, data.pde, 9, 16)
    u = np.asarray(predict(moved, truth[:, 0], cfg.run.seed).u)
    e, t = (u - truth)[:, 6:], truth[:, 6:]
    rel = np.sqrt((e ** 2).sum((1, 2)) / (t ** 2).sum((1, 2)))
    np.testing.assert_allclose(out["window"]["rel_l2_mean"], rel.mean(), rtol=1e-10)
    # Any window can be scored: here the training window's own times.
    early = evaluate(run, plots=False, window=(-1.0, 25.0), json_out=tmp_path / "early.json", log=lambda s: None)
    assert early["window"]["times"] == 6
    with pytest.raises(GridError, match="holds none of the grid's times"):
        evaluate(run, plots=False, window=(41.0, 50.0), json_out=tmp_path / "none.json", log=lambda s: None)


def test_a_training_window_must_hold_two_times_of_the_grid(tmp_path):
    from pihc.training.config import ConfigError
    from pihc.training.data import model_grids

    with pytest.raises(ConfigError, match="train_until = 3.0.*at least 2 of its nodes"):
        model_grids(tiny_config(tmp_path, data__train_until=3.0))
    g, whole = model_grids(tiny_config(tmp_path, data__train_until=27.0))  # cut at the last node before: 25
    assert g.shape[0] == 6 and g.axes[0].hi == 25.0 and whole.shape[0] == 9


def test_expert_labels_name_each_time_slab_and_block_in_the_layers_order():
    from pihc.pdes import navier_stokes_grid
    from pihc.training.plots import expert_labels

    grid = navier_stokes_grid(9, 8, 8, t_end=5.0)
    assert expert_labels(grid, (1, 2, 1)) == ["0: x 0-0.5", "1: x 0.5-1"]
    slabbed = expert_labels(grid, (1, 2, 1), 6)  # 3 slabs of 2 experts, slab 0's first
    assert slabbed[0] == "0: slab 0, x 0-0.5" and slabbed[3] == "3: slab 1, x 0.5-1" and slabbed[5] == "5: slab 2, x 0.5-1"
