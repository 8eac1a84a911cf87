"""The command line's answer to bad input: one line, ``error: ...``, saying what to do, a nonzero
exit code (2 for bad input, 1 for a run that fails), no traceback, and nothing written or lost."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pihc import cli
from pihc.data.diffusion_sorption import physical_constants
from pihc.data.hdf5 import write_pdebench
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.io import CHECKPOINT, MetricsLog, read_checkpoint_meta
from pihc.training.problems import Problem, register_problem

NT, NX = 9, 32


def _fields(n: int) -> np.ndarray:
    grid = diffusion_sorption_grid(NT, NX)
    m = grid.mesh()
    t, x = m[..., 0], m[..., 1]
    c0 = np.linspace(0.02, 0.18, n)
    u = np.stack([c + (1 - c) * np.exp(-x / (0.05 + 1e-3 * t)) for c in c0])
    u[:, 0] = c0[:, None]
    return u


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A data file of 8 samples and a PI-SC config for it."""
    tmp = tmp_path_factory.mktemp("cli")
    data = write_pdebench(tmp / "data.h5", [_fields(8)], diffusion_sorption_grid(NT, NX),
                          {"pde": physical_constants(DiffusionSorption())}, 8)
    cfg = tmp / "sc.yaml"
    cfg.write_text(f"""problem: diffusion-sorption
data: {{path: {data}, nt: {NT}, nx: {NX}, test_samples: 2}}
model: {{method: sc, width: 8, modes: [3, 4], layers: 2, n_basis: 4}}
optim: {{batch: 2, steps: 4, decay_every: 2}}
run: {{checkpoint_every: 2}}
""")
    return tmp, cfg


@pytest.fixture(scope="module")
def trained(files):
    """A run of that config, stopped after 2 of its 4 steps."""
    tmp, cfg = files
    assert cli.main(["train", "--config", str(cfg), "--out", str(tmp / "run"), "--max-steps", "2", "--quiet"]) == 0
    return tmp / "run"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, code: int, match: str, *args) -> str:
    """Run the CLI; check the exit code and that stderr is one ``error:`` line containing ``match``."""
    rc, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    return lines[0]


def test_a_generator_setting_is_refused_before_the_data_are_said_to_be_generated(files, capsys, tmp_path):
    """A setting the generator refuses gets its one error line, and stdout does not announce the generation
    (diffusion-sorption and Navier-Stokes, whose checks run before anything is made)."""
    _, cfg = files
    new = tmp_path / "new.h5"
    for config, setting, match in [
            (cfg, "data.generate.seed=-1", "seed must be >= 0, got -1"),
            (cfg, "data.generate.ic=bogus", "data.generate: unknown initial-condition family 'bogus'"),
            ("navier-stokes/sc-small", "data.generate.constants.viscosity=-1",
             "data.generate: viscosity must be a positive number, got -1"),
            ("navier-stokes/sc-small", "data.generate.solve_nx=100",
             "data.generate: solve_nx must be a multiple of nx = 64")]:
        rc, out, err = run_cli(capsys, "train", "--config", config, "--out", tmp_path / "run", "--set",
                               f"data.path={new}", "--set", setting)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and match in err, err
        assert "generating" not in out, out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run, no data


def test_bad_arguments_and_configs_are_refused_before_compute(files, capsys, tmp_path):
    tmp, cfg = files
    out = tmp_path / "out"
    train = ["train", "--config", cfg, "--out", out]
    for code, match, args in [
        (2, "argument --max-steps: must be >= 1, got 0", [*train, "--max-steps", "0"]),
        (2, "argument --max-steps: must be >= 1, got -3", [*train, "--max-steps", "-3"]),
        (2, "optim.lr must be > 0, got -1.0", [*train, "--set", "optim.lr=-1"]),
        (2, "optim.lr must be a finite number, got nan", [*train, "--set", "optim.lr=.nan"]),
        (2, "the value is not valid YAML", [*train, "--set", "model.modes=[3, 4"]),
        (2, "data.train_samples must be >= 1", [*train, "--set", "data.train_samples=0"]),
        (2, "data.generate.samples must be >= 1, got 0",
         [*train, "--set", "data.generate.samples=0", "--set", f"data.path={tmp_path / 'new.h5'}"]),
        (2, "data.generate: unknown initial-condition family 'bogus'",
         [*train, "--set", "data.generate.ic=bogus", "--set", f"data.path={tmp_path / 'new.h5'}"]),
        # Data to be generated that would not fit the config: refused before they are made.
        (2, "data.generate makes data on 9 x 32: axis 't': the data has 9 points and the model 6",
         [*train, "--set", "data.nt=6", "--set", "data.generate.nt=9", "--set", f"data.path={tmp_path / 'new.h5'}"]),
        (2, "data.generate.samples has 4 samples; 3 train + 2 test requested: lower data.train_samples",
         [*train, "--set", "data.generate.samples=4", "--set", "data.train_samples=3",
          "--set", f"data.path={tmp_path / 'new.h5'}"]),
        (2, "is a file, not a directory", ["train", "--config", cfg, "--out", cfg]),
        (2, "is not a run directory", ["train", "--resume", tmp_path / "nowhere"]),
        (2, "drop --config/--set", ["train", "--resume", tmp_path, "--set", "optim.lr=1"]),
        (2, "unknown --ic 'bogus'", ["generate", "diffusion-sorption", "--samples", "2", "--ic", "bogus",
                                     "--out", tmp_path / "g.h5"]),
        (2, "argument --batch: must be >= 1, got 0", ["generate", "diffusion-sorption", "--samples", "2",
                                                      "--batch", "0", "--out", tmp_path / "g.h5"]),
        (2, "argument --samples: must be >= 1, got 0", ["generate", "diffusion-sorption", "--samples", "0",
                                                        "--out", tmp_path / "g.h5"]),
        (2, "is a directory; give a file name", ["generate", "diffusion-sorption", "--samples", "2",
                                                 "--out", tmp_path]),
        (2, "give either a problem", ["generate", "--config", cfg, "diffusion-sorption", "--samples", "2",
                                      "--out", tmp_path / "g.h5"]),
        (2, "give either a problem", ["generate", "--config", cfg, "navier-stokes", "--samples", "2",
                                      "--out", tmp_path / "g.h5"]),
        (2, "argument --samples: must be >= 1, got 0", ["evaluate", tmp_path, "--samples", "0"]),
        (2, "argument --samples: must be >= 1, got -2", ["evaluate", tmp_path, "--samples", "-2"]),
        (2, "is not a run directory", ["evaluate", tmp_path]),
        (2, "is not a readable HDF5 file", ["data", "info", cfg]),
    ]:
        refused(capsys, code, match, *args)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {method: sc\noptim: [\n")
    refused(capsys, 2, f"{bad} is not valid YAML: expected ',' or '}}', but got ':' at line 2",
            "train", "--config", bad, "--out", out)
    u = _fields(8)
    u[1, 2, 3] = np.nan
    nan = write_pdebench(tmp_path / "nan.h5", [u], diffusion_sorption_grid(NT, NX),
                         {"pde": physical_constants(DiffusionSorption())}, 8)
    refused(capsys, 2, "sample 0001 contains NaN or Inf; list every bad sample with `pihc data info",
            *train, "--set", f"data.path={nan}")
    ns = tmp_path / "ns.h5"
    assert cli.main(["generate", "navier-stokes", "--samples", "1", "--nx", "8", "--nt", "3", "--out", str(ns),
                     "--quiet"]) == 0
    capsys.readouterr()
    refused(capsys, 2, "ns.h5 holds NavierStokes2D data; the config's problem 'diffusion-sorption' trains on"
            " DiffusionSorption", *train, "--set", f"data.path={ns}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "nan.h5", "ns.h5"]  # no run, no data


def test_evaluate_checks_its_outputs_and_the_checkpoint_first(trained, capsys, tmp_path):
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    refused(capsys, 2, "is a directory; give a file name", "evaluate", run, "--json", tmp_path)
    refused(capsys, 2, "cannot be created", "evaluate", run, "--json", run / "config.yaml" / "e.json")
    refused(capsys, 2, "holds 2 test samples; 3 were asked for", "evaluate", run, "--samples", "3", "--no-plots")
    refused(capsys, 2, "--split train scores the run's own training trajectories: leave out --data", "evaluate",
            run, "--split", "train", "--data", run / "config.yaml")
    refused(capsys, 2, "argument --split: invalid choice: 'val'", "evaluate", run, "--split", "val")
    raw = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(raw[:-100] + bytes(b ^ 1 for b in raw[-100:-90]) + raw[-90:])
    refused(capsys, 2, "checkpoint.eqx is damaged", "evaluate", run, "--no-plots")
    refused(capsys, 2, "checkpoint.eqx is damaged", "train", "--resume", run)
    n = int.from_bytes(raw[:8], "little")
    old = json.dumps({"step": 2}).encode()  # the first format: no version, no checksum
    (run / CHECKPOINT).write_bytes(len(old).to_bytes(8, "little") + old + raw[8 + n:-32])
    refused(capsys, 2, "was written by an older pihc, without a checksum", "evaluate", run, "--no-plots")
    (run / CHECKPOINT).write_bytes(raw)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("batch: 2", "batch: 3"))
    refused(capsys, 2, "optim.batch: 2 when trained, 3 now", "train", "--resume", run)
    refused(capsys, 2, "optim.batch: 2 when trained, 3 now", "evaluate", run, "--no-plots")
    assert not (run / "evaluation.json").exists() and (run / CHECKPOINT).read_bytes() == raw


def test_divergence_exits_1_and_names_the_last_finite_state(files, capsys, tmp_path):
    _, cfg = files
    line = refused(capsys, 1, "the last finite state, after step 1, is in", "train", "--config", cfg,
                   "--out", tmp_path / "div", "--set", "optim.lr=1e30", "--quiet")
    assert "lower optim.lr" in line and read_checkpoint_meta(tmp_path / "div" / CHECKPOINT)["step"] == 1


def test_quiet_prints_only_the_result(trained, files, capsys, tmp_path):
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--max-steps", "1", "--quiet")
    summary = json.loads(out)  # one line: the run, its steps, final loss and report
    assert rc == 0 and err == "" and len(out.strip().splitlines()) == 1 and summary["run"] == str(run)
    assert summary["report"] == str(run / "report.md") and (run / "report.md").is_file()
    assert summary["final_loss"] == MetricsLog(run / "metrics.jsonl").read()[-1]["loss"]
    # A config whose data file is missing generates it: quietly too.
    seen = []

    def generate(path, g, progress=True):
        seen.append(progress)
        shutil.copy(files[0] / "data.h5", path)
        return path

    from pihc.training.problems import get_problem

    ds = get_problem("diffusion-sorption")
    register_problem("reliability-generated", Problem(open=ds.open, generate=generate, grid=ds.grid))
    cfg = tmp_path / "gen.yaml"
    cfg.write_text(files[1].read_text().replace("problem: diffusion-sorption", "problem: reliability-generated")
                   .replace(str(files[0] / "data.h5"), str(tmp_path / "made.h5")))
    rc, out, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "gen", "--max-steps", "1",
                           "--quiet")
    assert rc == 0 and err == "" and json.loads(out)["run"] == str(tmp_path / "gen")
    assert len(out.strip().splitlines()) == 1 and json.loads(out)["steps"] == 1
    assert seen == [False]


def test_a_run_is_evaluated_from_anywhere_and_never_makes_its_data_to_be_refused(capsys, tmp_path, monkeypatch):
    """data.path is relative to where the run trained: from elsewhere run.json's absolute path is read; scored on
    --data or refused, a run whose file is gone does not remake it, and scored on its own data it does, when read."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    (home / "ds.yaml").write_text(f"""problem: diffusion-sorption
data: {{path: data/ds.h5, generate: {{samples: 6, nx: {NX}, nt: {NT}, seed: 0, ic: smooth}}, nt: {NT}, nx: {NX},
  test_samples: 2}}
model: {{method: sc, width: 8, modes: [3, 4], layers: 2, n_basis: 4}}
optim: {{batch: 2, steps: 2, decay_every: 2}}
run: {{checkpoint_every: 2}}
""")
    monkeypatch.chdir(home)
    assert cli.main(["train", "--config", "ds.yaml", "--out", "run", "--max-steps", "1", "--quiet"]) == 0
    data, run = home / "data" / "ds.h5", home / "run"
    assert json.loads((run / "run.json").read_text())["data_file"] == str(data)

    monkeypatch.chdir(elsewhere)  # resumed and scored from here, on the file it trained on
    rc, out, _ = run_cli(capsys, "train", "--resume", run)
    assert rc == 0 and f"reading {data}" in out and read_checkpoint_meta(run / CHECKPOINT)["step"] == 2
    rc, out, _ = run_cli(capsys, "evaluate", run, "--no-plots", "--json", tmp_path / "elsewhere.json")
    assert rc == 0 and f"reading {data}" in out
    assert list(elsewhere.iterdir()) == []  # nothing generated here
    monkeypatch.chdir(home)
    rc, out, _ = run_cli(capsys, "evaluate", "run", "--no-plots", "--json", tmp_path / "home.json")
    assert rc == 0 and "reading" not in out
    own = json.loads((tmp_path / "home.json").read_text())
    assert json.loads((tmp_path / "elsewhere.json").read_text())["rel_l2_mean"] == own["rel_l2_mean"]
    monkeypatch.chdir(elsewhere)

    # The run's data gone: another file scores it; refusals make nothing.
    other = tmp_path / "other.h5"
    assert cli.main(["generate", "diffusion-sorption", "--samples", "2", "--nx", str(NX), "--nt", str(NT),
                     "--seed", "100", "--ic", "smooth", "--out", str(other), "--quiet"]) == 0
    coarse = tmp_path / "coarse.h5"
    assert cli.main(["generate", "diffusion-sorption", "--samples", "2", "--nx", "24", "--nt", str(NT),
                     "--out", str(coarse), "--quiet"]) == 0
    capsys.readouterr()
    saved = data.read_bytes()
    data.unlink()
    refused(capsys, 2, "integer multiple of the model's", "evaluate", run, "--data", coarse, "--no-plots")
    refused(capsys, 2, "3 sizes (9, 32, 32) were given", "evaluate", run, "--grid", "9", "32", "32", "--no-plots")
    refused(capsys, 2, "cannot be scored on 9 x 24", "evaluate", run, "--grid", "9", "24", "--no-plots")
    rc, _, _ = run_cli(capsys, "evaluate", run, "--data", other, "--no-plots", "--json", tmp_path / "other.json")
    assert rc == 0 and json.loads((tmp_path / "other.json").read_text())["data"] == str(other)
    assert not data.exists() and list(elsewhere.iterdir()) == []

    # Scored on its own data, the run makes the file when it reads it: the same file, the same score.
    monkeypatch.chdir(home)
    rc, out, _ = run_cli(capsys, "evaluate", "run", "--no-plots", "--json", tmp_path / "again.json")
    assert rc == 0 and "not found: generating it" in out
    assert json.loads((tmp_path / "again.json").read_text())["rel_l2_mean"] == own["rel_l2_mean"]
    assert data.read_bytes() == saved
