"""Training and evaluation never keep a bad state silently: non-finite steps stop the run with the
last finite state on disk, interrupts save the last step, changed configs and locked or damaged run
directories are refused, bad arguments fail before compute."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.data.hdf5 import DataError
from pihc.files import PathError
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.config import Config, ConfigError, from_dict
from pihc.training.evaluation import EvaluationError, evaluate
from pihc.training.io import CHECKPOINT, MetricsLog, load_checkpoint, read_checkpoint_meta, save_checkpoint
from pihc.training.loop import DivergenceError, train
from pihc.training.problems import Problem, register_problem
from pihc.training.run import RunLock, RunLockedError

GRID = diffusion_sorption_grid(nt=9, nx=32, t_max=40.0)
QUIET = {"progress": False, "log": lambda s: None}


class _Fields:
    """Twelve smooth fields on GRID (in memory; the file named by the config is not read)."""

    def __init__(self):
        from scipy.special import erfc

        m = GRID.mesh()
        t, x = m[..., 0], m[..., 1]
        c0 = np.linspace(0.02, 0.18, 12)
        self.u = np.stack([c + (1 - c) * erfc(x / (2 * np.sqrt(5e-4 * (t + 1.0)))) for c in c0])
        self.u[:, 0] = c0[:, None]
        self.pde, self.grid, self.samples = DiffusionSorption(), GRID, [f"{i:04d}" for i in range(12)]

    def load(self, idx):
        return self.u[np.asarray(idx)]


def _no_generator(path, g):
    raise AssertionError("the test's data is in memory; nothing is generated")


register_problem("reliability-fields", Problem(open=lambda p: _Fields(), generate=_no_generator,
                                               grid=lambda shape: diffusion_sorption_grid(*shape, t_max=40.0)))


def config(tmp_path, method="sc", **sections) -> Config:
    data = tmp_path / "fields.h5"
    data.write_bytes(b"")
    d = {"problem": "reliability-fields", "data": {"path": str(data), "nt": 9, "nx": 32, "test_samples": 4},
         "model": {"method": method, "width": 8, "modes": [3, 4], "layers": 2, "n_basis": 4},
         "constraint": {"splits": [1, 2], "n_points": 40,
                        "row_weights": {"pde": 40.0, "initial": 32.0, "boundary": 16.0},
                        "solver": {"rtol": 1e-6, "atol": 1e-10}},
         "optim": {"batch": 3, "steps": 4, "decay_every": 2}, "run": {"checkpoint_every": 2}}
    for sec, over in sections.items():
        d[sec] = {**d.get(sec, {}), **over}
    return from_dict(Config, d)


def records(run):
    return [json.loads(ln) for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def finite(path, cfg) -> bool:
    from pihc.training.model import build_model
    from pihc.training.optim import make_optimizer

    model = build_model(cfg, DiffusionSorption(), GRID, jax.random.key(0))
    state = make_optimizer(cfg).init(eqx.filter(model, eqx.is_inexact_array))
    tree, _ = load_checkpoint(path, (model, state))
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array)))


@pytest.fixture(scope="module")
def halfway(tmp_path_factory):
    """A PI-SC run stopped after 2 of its 4 steps (checkpoint at step 2)."""
    tmp = tmp_path_factory.mktemp("halfway")
    cfg = config(tmp)
    return cfg, train(cfg, tmp / "run", max_steps=2, **QUIET)


def copy_of(halfway, tmp_path):
    cfg, run = halfway
    return cfg, Path(shutil.copytree(run, tmp_path / "run"))


def test_divergence_stops_the_run_and_keeps_the_last_finite_state(tmp_path):
    """lr = 1e30: step 1 is finite, step 2's loss is not.  Nothing non-finite reaches the checkpoint:
    it holds the state after step 1, byte for byte what a run stopped there writes."""
    cfg = config(tmp_path, optim={"lr": 1e30}, run={"checkpoint_every": 100})
    with pytest.raises(DivergenceError, match=r"step 2 of .* is not usable \(the loss is nan.*the last finite"
                                              r" state, after step 1, is in .*checkpoint.eqx.*lower optim.lr"):
        train(cfg, tmp_path / "div", **QUIET)
    ckpt = tmp_path / "div" / CHECKPOINT
    assert read_checkpoint_meta(ckpt)["step"] == 1 and finite(ckpt, cfg)
    ref = train(cfg, tmp_path / "ref", max_steps=1, **QUIET)
    assert ckpt.read_bytes() == (ref / CHECKPOINT).read_bytes()
    bad = records(tmp_path / "div")[-1]  # the bad step is logged, as valid JSON, with why it stopped
    assert bad["step"] == 2 and bad["loss"] is None and "the loss is nan" in bad["stopped"]
    # A resume repeats the same step and stops again, never overwriting the finite state.
    with pytest.raises(DivergenceError, match="after step 1"):
        train(cfg, tmp_path / "div", resume=True, **QUIET)
    assert ckpt.read_bytes() == (ref / CHECKPOINT).read_bytes()
    assert [r["step"] for r in records(tmp_path / "div")] == [1, 2]


def test_a_step_whose_every_solve_fails_stops_the_run(tmp_path):
    cfg = config(tmp_path, "hc", constraint={"solver": {"max_steps": 1, "rtol": 1e-14, "atol": 1e-10}})
    with pytest.raises(DivergenceError, match=r"step 1 .*every solve failed \(3 of 3 samples\).*has no checkpoint"
                                              r".*constraint.solver.max_steps"):
        train(cfg, tmp_path / "fail", **QUIET)
    (rec,) = records(tmp_path / "fail")
    assert rec["skipped_update"] == 1 and rec["failed_solves"] == 3 and "every solve failed" in rec["stopped"]
    assert not (tmp_path / "fail" / CHECKPOINT).exists()


def test_an_interrupt_saves_the_last_finished_step_and_the_resume_is_exact(tmp_path, monkeypatch):
    cfg = config(tmp_path, run={"checkpoint_every": 100})
    full = train(cfg, tmp_path / "full", **QUIET)
    append = MetricsLog.append

    def interrupted(self, rec):
        if rec["step"] == 3:
            raise KeyboardInterrupt
        append(self, rec)

    monkeypatch.setattr(MetricsLog, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "part", **QUIET)
    monkeypatch.undo()
    assert read_checkpoint_meta(tmp_path / "part" / CHECKPOINT)["step"] == 2
    train(cfg, tmp_path / "part", resume=True, **QUIET)
    assert (full / CHECKPOINT).read_bytes() == (tmp_path / "part" / CHECKPOINT).read_bytes()
    assert records(full) == [dict(r, step_time_s=a["step_time_s"])
                             for r, a in zip(records(tmp_path / "part"), records(full))]


def test_a_changed_config_is_refused_by_resume_and_evaluate_naming_the_keys(halfway, tmp_path):
    _, run = copy_of(halfway, tmp_path)
    saved = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(saved.replace("lr: 0.001", "lr: 0.002").replace("width: 8", "width: 6"))
    from pihc.training.config import load_config

    edited = load_config(run / "config.yaml")
    msg = r"config.yaml was changed after .*model.width: 8 when trained, 6 now; optim.lr: 0.001 when trained, 0.002 now"
    with pytest.raises(ConfigError, match=msg):
        train(edited, run, resume=True, **QUIET)
    with pytest.raises(ConfigError, match=msg):
        evaluate(run, plots=False, log=lambda s: None)
    (run / "config.yaml").write_text(saved)
    assert read_checkpoint_meta(run / CHECKPOINT)["step"] == 2  # nothing was touched


def test_a_run_directory_is_locked_and_a_killed_holder_leaves_no_stale_lock(halfway, tmp_path):
    cfg, run = copy_of(halfway, tmp_path)
    with RunLock(run):
        with pytest.raises(RunLockedError, match=f"in use by another pihc process \\(pid {os.getpid()}\\)"):
            train(cfg, run, resume=True, **QUIET)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pihc.training.run import RunLock
        with RunLock({str(run)!r}):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        train(cfg, run, resume=True, **QUIET)
    holder.kill()  # SIGKILL: the kernel drops the lock with the process
    holder.communicate()
    train(cfg, run, resume=True, **QUIET)
    assert read_checkpoint_meta(run / CHECKPOINT)["step"] == 4


def test_a_resume_removes_temporary_files_of_killed_writers_and_a_torn_metrics_line(halfway, tmp_path):
    _, run = copy_of(halfway, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = run / f".checkpoint.eqx.pid{dead}.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "step_ti')  # a kill during the append of step 3
    from pihc.training.config import load_config

    said = []
    train(load_config(run / "config.yaml"), run, resume=True, progress=False, log=said.append)
    assert not stale.exists() and any("temporary file" in s for s in said) and any("torn" in s for s in said)
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4]
    mask = os.umask(0)
    os.umask(mask)
    for p in run.iterdir():  # the files of a run are created like any other file, not 0600
        if p.is_file() and p.name != ".lock":
            assert p.stat().st_mode & 0o777 == 0o666 & ~mask, p.name


def test_bad_arguments_are_refused_before_anything_is_written(halfway, tmp_path):
    cfg, run = halfway
    with pytest.raises(ValueError, match="max_steps must be >= 1, got 0"):
        train(cfg, tmp_path / "a", max_steps=0, **QUIET)
    with pytest.raises(ConfigError, match="data.train_samples must be >= 1"):
        train(config(tmp_path, data={"train_samples": 0}), tmp_path / "b", **QUIET)
    with pytest.raises(ConfigError, match="none is left to train on"):
        train(config(tmp_path, data={"test_samples": 12}), tmp_path / "c", **QUIET)
    with pytest.raises(ConfigError, match="optim.lr must be > 0, got -1.0"):
        train(config(tmp_path, optim={"lr": -1.0}), tmp_path / "d", **QUIET)
    with pytest.raises(ConfigError, match="optim.lr must be a finite number, got nan"):
        train(config(tmp_path, optim={"lr": float("nan")}), tmp_path / "e", **QUIET)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        (tmp_path / "f").mkdir()
        (tmp_path / "f" / "config.yaml").write_text("")
        train(cfg, tmp_path / "f", resume=True, **QUIET)
    with pytest.raises(PathError, match="is a file, not a directory"):
        train(cfg, tmp_path / "f" / "config.yaml", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "fields.h5"]
    for n in (0, -2):
        with pytest.raises(ValueError, match=f"n_samples must be >= 1, got {n}"):
            evaluate(run, n_samples=n, plots=False, log=lambda s: None)
    with pytest.raises(DataError, match="holds 4 test samples; 5 were asked for"):
        evaluate(run, n_samples=5, plots=False, log=lambda s: None)
    with pytest.raises(PathError, match="is a directory; give a file name"):
        evaluate(run, json_out=tmp_path, plots=False, log=lambda s: None)
    assert not (run / "evaluation.json").exists()


def test_evaluation_refuses_predictions_that_are_not_finite_and_writes_no_nan(halfway, tmp_path):
    cfg, run = copy_of(halfway, tmp_path)
    from pihc.training.model import read_model
    from pihc.training.optim import make_optimizer

    model, meta = read_model(cfg, DiffusionSorption(), GRID, run)
    model = jax.tree.map(lambda x: x * jnp.nan if eqx.is_inexact_array(x) else x, model)
    save_checkpoint(run / CHECKPOINT, (model, make_optimizer(cfg).init(eqx.filter(model, eqx.is_inexact_array))),
                    meta)  # a checkpoint with a valid checksum, written by a library user
    with pytest.raises(EvaluationError, match=r"predicts NaN or Inf for 4 of 4 test samples.*nothing was written"):
        evaluate(run, plots=False, log=lambda s: None)
    assert not (run / "evaluation.json").exists()
