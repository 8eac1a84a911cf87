"""The tests' tiny training problem: an in-memory dataset, its registered problem and a config.

Imported by the test files that train, evaluate or load runs. Importing it
registers the problem ``"tiny-test"`` (once per process; every file that
needs it imports this module, so the order the files run in does not matter).
Everything a test writes goes under the ``tmp_path`` it passes in.
"""

import json
from pathlib import Path

import numpy as np

from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.training.config import Config, from_dict
from pihc.training.problems import Problem, register_problem

FINE = diffusion_sorption_grid(nt=9, nx=64, t_max=40.0)
QUIET = dict(progress=False, log=lambda s: None)


class TinyData:
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


def _no_generator(path, generator_config):
    raise FileNotFoundError(f"{path}: the tiny-test problem has no generator")


register_problem("tiny-test", Problem(open=lambda p: TinyData(), generate=_no_generator,
                                      grid=lambda shape: diffusion_sorption_grid(*shape, t_max=40.0)))


def tiny_config(tmp_path, method="moe", **over) -> Config:
    """A config of the tiny problem; ``section__key=value`` overrides, e.g. ``data__nx=16``."""
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


def checkpoint_leaves(path) -> bytes:
    """A checkpoint's array bytes, without its metadata header."""
    raw = Path(path).read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def metrics(run) -> list[dict]:
    """A run's ``metrics.jsonl``, one dict per step."""
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
