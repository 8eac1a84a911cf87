"""Killed processes lose nothing and leave nothing: SIGKILL and SIGTERM of ``pihc train`` and
``pihc generate``, and a second trainer on a run directory in use (real processes, real signals)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pihc.data.diffusion_sorption import physical_constants
from pihc.data.hdf5 import write_pdebench
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.config import load_config
from pihc.training.io import CHECKPOINT, read_checkpoint_meta
from pihc.training.loop import train

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def pihc(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pihc.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def wait_for(predicate, what: str, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def config(tmp_path):
    grid = diffusion_sorption_grid(9, 32)
    m = grid.mesh()
    c0 = np.linspace(0.02, 0.18, 8)
    u = np.stack([c + (1 - c) * np.exp(-m[..., 1] / (0.05 + 1e-3 * m[..., 0])) for c in c0])
    data = write_pdebench(tmp_path / "data.h5", [u], grid, {"pde": physical_constants(DiffusionSorption())}, 8)
    cfg = tmp_path / "sc.yaml"
    cfg.write_text(f"""problem: diffusion-sorption
data: {{path: {data}, nt: 9, nx: 32, test_samples: 2}}
model: {{method: sc, width: 8, modes: [3, 4], layers: 2, n_basis: 4}}
optim: {{batch: 2, steps: 100000, decay_every: 1000}}
run: {{checkpoint_every: 7}}
""")
    return cfg


def test_kill_9_then_resume_is_exact_and_a_running_run_is_locked_and_sigterm_saves(config, tmp_path):
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    first = pihc("train", "--config", config, "--out", run, "--quiet")
    wait_for(lambda: lines(metrics) >= 10, "10 steps")
    second = pihc("train", "--resume", run)  # a second trainer while the first runs
    _, err = second.communicate(timeout=300)
    assert second.returncode == 1 and err.strip() == (
        f"error: {run} is in use by another pihc process (pid {first.pid}); wait for it to finish or stop it"
        f" (kill {first.pid}), or give another --out")
    first.kill()  # SIGKILL, at any point of a step, an append or a checkpoint write
    first.communicate()
    saved = read_checkpoint_meta(run / CHECKPOINT)["step"]
    assert saved % 7 == 0 and saved >= 7

    # Resume: stale temporary files go, a torn metrics line is dropped, and the result is exact.
    cfg = load_config(run / "config.yaml")
    target = saved + 3
    train(cfg, run, resume=True, max_steps=3, progress=False, log=lambda s: None)
    ref = train(cfg, tmp_path / "ref", max_steps=target, progress=False, log=lambda s: None)
    assert (run / CHECKPOINT).read_bytes() == (ref / CHECKPOINT).read_bytes()
    a = [json.loads(x) for x in metrics.read_text().splitlines()]
    b = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in a] == list(range(1, target + 1))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert not list(run.glob(".*.tmp"))

    # SIGTERM: the last finished step is saved, the exit says so, nothing is left behind.
    resumed = pihc("train", "--resume", run, "--quiet")
    wait_for(lambda: lines(metrics) >= target + 5, "5 more steps")
    resumed.send_signal(signal.SIGTERM)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    assert err.strip().splitlines() == ["error: stopped by SIGTERM; temporary files were removed; continue with"
                                        " `pihc train --resume RUN_DIR`"]
    assert read_checkpoint_meta(run / CHECKPOINT)["step"] == lines(metrics)
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_generator_leaves_no_worker_and_no_partial_file(tmp_path, sig):
    out = tmp_path / "data.h5"
    out.write_bytes(b"the previous dataset")
    gen = pihc("generate", "diffusion-sorption", "--samples", "64", "--nx", "64", "--nt", "11", "--batch", "2",
               "--out", out, "--quiet")
    wait_for(lambda: list(tmp_path.glob(".data.h5.*.tmp")), "the temporary file")
    children = []

    def workers():
        children[:] = subprocess.run(["pgrep", "-P", str(gen.pid)], capture_output=True, text=True).stdout.split()
        return len(children) >= 2

    wait_for(workers, "the pool's workers")
    gen.send_signal(sig)
    _, err = gen.communicate(timeout=120)
    wait_for(lambda: not any(alive(int(c)) for c in children), "the workers to die", timeout=30)
    assert out.read_bytes() == b"the previous dataset"
    if sig == signal.SIGTERM:
        assert gen.returncode == 128 + sig and err.strip() == "error: stopped by SIGTERM; temporary files were removed"
        assert not list(tmp_path.glob(".data.h5.*.tmp"))
    else:  # nothing can run at SIGKILL: the next writer of that file removes what it left
        (partial,) = tmp_path.glob(".data.h5.*.tmp")
        done = pihc("generate", "diffusion-sorption", "--samples", "2", "--nx", "64", "--nt", "11",
                    "--out", out, "--quiet")
        done.communicate(timeout=300)
        assert done.returncode == 0 and not partial.exists() and out.read_bytes()[:4] == b"\x89HDF"
