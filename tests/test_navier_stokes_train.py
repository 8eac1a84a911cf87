"""The Navier-Stokes small MoE config end to end on a tiny generated dataset, and its refusals.

The run is the shipped ``navier-stokes/moe-small`` config with the sizes cut
down (grid, network, points, steps); the data are made by pihc's own
generator when the file is missing, as a user's first run would.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from pihc.grid import GridError
from pihc.training.config import ConfigError, load_config
from pihc.training.data import prepare_data

QUIET = dict(progress=False, log=lambda s: None)


def tiny(tmp_path, *extra, data="ns.h5"):
    """moe-small, shrunk: data 9 x 16 x 16 (solved at 32^2), model 9 x 8 x 8, 2 x 2 experts in each of
    3 time slabs (the config's 7 slabs of 3 steps need 22 levels); every step trains on the same two
    samples, so the losses of its steps compare."""
    return load_config("navier-stokes/moe-small", [
        f"data.path={tmp_path / data}", "data.generate.samples=6", "data.generate.nx=16", "data.generate.nt=9",
        "data.generate.solve_nx=32", "data.nt=9", "data.nx=8", "data.ny=8", "data.train_samples=2",
        "data.test_samples=2", "model.width=8", "model.layers=2", "model.modes=[3, 3, 3]", "model.n_basis=8",
        "model.padding=[2, 0, 0]", "constraint.splits=[1, 2, 2]", "constraint.n_points=40",
        "constraint.overlap=[0, 1, 1]", "constraint.time_slabs=3",
        "optim.batch=2", "optim.steps=4", "optim.lr=3.0e-3", "run.checkpoint_every=4", *extra])


def test_the_small_moe_trains_on_generated_data_and_evaluates(tmp_path):
    from pihc.training.evaluation import evaluate
    from pihc.training.loop import train

    cfg = tiny(tmp_path)
    run = train(cfg, tmp_path / "run", **QUIET)
    m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(x["failed_solves"] == 0 for x in m)
    losses = [x["loss"] for x in m]  # the physics loss of the same two samples goes down at every step
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.85 * losses[0], losses
    out = evaluate(run, log=lambda s: None)
    for key in ("rel_l2_mean", "rel_l2_std", "rel_l2_median", "rel_l2_max"):
        assert np.isfinite(out[key]) and out[key] > 0
    assert np.isfinite(out["persistence"]["rel_l2_mean"]) and len(out["rel_l2_over_time"]) == 9
    assert out["rel_l2_over_time"][0] < 1e-6  # the initial condition holds by construction
    assert out["experts"]["status_counts"] == [{"successful": 2}] * 12  # 3 time slabs of 2 x 2 experts
    assert out["seams"]["mean_abs_residual_near_seams"] > 0  # the 2 x 2 experts' seams, the wrap included
    assert out["seams"]["time_slab_levels"] == [2, 5]  # the slabs' shared levels of 8 steps
    assert (run / "plots" / "snapshots.png").stat().st_size > 0
    # Resolution independence: the same backbone on the data's own 16 x 16 grid.
    fine = evaluate(run, grid=(9, 16, 16), plots=False, log=lambda s: None)
    assert fine["grid"] == [9, 16, 16] and fine["trained_grid"] == [9, 8, 8] and np.isfinite(fine["rel_l2_mean"])
    with pytest.raises(GridError, match=r"got nx = 16, ny = 8: make them equal .*--grid NT N N"):
        evaluate(run, grid=(9, 16, 8), json_out=tmp_path / "non-square.json", plots=False, log=lambda s: None)
    assert not (tmp_path / "non-square.json").exists()
    # Data of another viscosity, or of another PDE, are refused by name before anything is scored.
    from pihc.data.hdf5 import DataError, write_pdebench
    from pihc.data.navier_stokes import generate_navier_stokes
    from pihc.pdes import DiffusionSorption, diffusion_sorption_grid

    generate_navier_stokes(tmp_path / "nu.h5", samples=2, nx=16, nt=9, viscosity=1e-3, progress=False)
    write_pdebench(tmp_path / "ds.h5", [np.zeros((2, 9, 16))], diffusion_sorption_grid(9, 16), {}, 2,
                   pde=DiffusionSorption())  # the file's PDE is what counts, not its values
    for path, match in (("nu.h5", "holds data with viscosity = 0.001; the run was trained with viscosity = 0.0001"),
                        ("ds.h5", "holds DiffusionSorption data; the run was trained on NavierStokes2D")):
        with pytest.raises(DataError, match=match):
            evaluate(run, data_path=str(tmp_path / path), json_out=tmp_path / "refused.json", plots=False,
                     log=lambda s: None)
    assert not (tmp_path / "refused.json").exists()
    # The training split against the same trajectories read by the other-data path: a file whose held-out
    # rows (the last data.test_samples = 2) are the training samples 0 and 1.
    import h5py

    with h5py.File(cfg.data.path, "r") as src, h5py.File(tmp_path / "train-as-test.h5", "w") as dst:
        dst.attrs.update(dict(src.attrs))
        for name in sorted(src)[:2]:
            src.copy(name, dst)
    train = evaluate(run, split="train", plots=False, log=lambda s: None)
    other = evaluate(run, data_path=str(tmp_path / "train-as-test.h5"), json_out=tmp_path / "other.json",
                     plots=False, log=lambda s: None)
    assert train["split"] == "train" and train["samples"] == 2 and (run / "evaluation-train.json").is_file()
    np.testing.assert_allclose(train["rel_l2_mean"], other["rel_l2_mean"], rtol=1e-12)
    assert abs(train["rel_l2_mean"] - out["rel_l2_mean"]) > 1e-6  # other trajectories than the held-out ones
    from pihc.training.report import write_report

    assert f"| on 2 of its training trajectories (mean +- std) | {100 * train['rel_l2_mean']:.2f}%" in \
        write_report(run).read_text()
    with pytest.raises(ValueError, match="leave out the data file"):
        evaluate(run, split="train", data_path=str(tmp_path / "train-as-test.h5"), plots=False, log=lambda s: None)


@pytest.mark.parametrize("override, error, match", [
    (["data.ny=4"], GridError, "as many points along y as along x"),
    (["constraint.splits=[1, 3, 2]"], GridError, "axis x has 8 points; 3 experts do not divide it"),
    (["constraint.splits=[1, 2]"], ConfigError, r"constraint.splits \[1, 2\] needs one count per grid axis \(t, x, y\)"),
    (["model.modes=[3, 3]"], ConfigError, r"model.modes \[3, 3\] needs one entry per grid axis \(t, x, y\)"),
    (["data.generate.constants={viscosity: 1.0e-3}"], ConfigError, "holds data with viscosity = 0.0001, but the"
                                                                  " config asks for 0.001"),
    (["pde.viscosity=1.0e-3"], ConfigError, "pde.viscosity is a physical constant of NavierStokes2D, which comes"
                                            " with the data; set data.generate.constants.viscosity"),
    (["pde.time_stencil=bdf"], ConfigError, "pde.time_stencil must be one of 'midpoint', 'backward', 'central'"),
    (["pde.time_accuracy=4"], ConfigError, r"pde: time_accuracy 4 is not available for the midpoint stencil"),
    (["pde.stencil=central"], ConfigError, r"pde.stencil: NavierStokes2D has no such option; its options are"
                                           r" \['subtract_mean', 'time_accuracy', 'time_stencil'\]"),
])
def test_bad_grids_splits_and_constants_are_refused_before_any_compute(tmp_path, override, error, match):
    from pihc.training.loop import train

    data = "ns.h5" if "viscosity" in override[0] else "never.h5"  # else refused before it is generated
    if data == "ns.h5":
        prepare_data(tiny(tmp_path), **QUIET)  # the data, made with the config's viscosity 1e-4
    with pytest.raises(error, match=match):  # when the config is loaded, or when the run starts
        train(tiny(tmp_path, *override, data=data), tmp_path / "refused", **QUIET)
    assert not (tmp_path / "never.h5").exists() and not (tmp_path / "refused" / "checkpoint.eqx").exists()


def test_the_configs_pde_options_set_the_residual_that_trains_and_scores(tmp_path):
    """``pde: {time_stencil: central, time_accuracy: 4}`` reaches the PDE of training and evaluation: the
    residual's w_t is then the fourth-order central difference (checked against numpy's), not midpoint's."""
    from pihc.training.evaluation import _other_data

    cfg = tiny(tmp_path, "pde.time_stencil=central", "pde.time_accuracy=4")
    data = prepare_data(cfg, **QUIET)
    assert (data.pde.time_stencil, data.pde.time_accuracy, data.pde.viscosity) == ("central", 4, 1e-4)
    assert _other_data(cfg, data, cfg.data.path).pde.time_stencil == "central"
    grid = data.grid
    t = grid.axes[0].coords
    w = jnp.broadcast_to(jnp.sin(3.0 * jnp.asarray(t))[:, None, None], grid.shape)
    w_t = np.asarray(data.pde.terms(w, grid)[..., 0])[:, 0, 0]
    dt = t[1] - t[0]
    w = np.asarray(w)
    central4 = (w[:-4, 0, 0] - 8 * w[1:-3, 0, 0] + 8 * w[3:-1, 0, 0] - w[4:, 0, 0]) / (12 * dt)
    np.testing.assert_allclose(w_t[2:-2], central4, rtol=1e-12)
    assert not np.allclose(w_t[2:-2], (w[2:-2, 0, 0] - w[1:-3, 0, 0]) / dt, rtol=1e-3)  # not midpoint's w_t


def test_seams_on_the_torus_include_the_wrap():
    from pihc.pdes.navier_stokes import navier_stokes_grid
    from pihc.training.evaluation import seam_mask

    m = seam_mask(navier_stokes_grid(3, 16, 16), (1, 2, 2), 1)
    np.testing.assert_array_equal(np.flatnonzero(m[0, :, 5]), [0, 7, 8, 15])  # x seams at 8 and at the wrap
    assert not m[0, 3, 3] and m[1, 3, 0]
