"""``pihc.train``: training from Python, for notebooks, through the same run directory as ``pihc train``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .config import ConfigError, load_config
from .loop import train
from .run import load_run

# A config for a new PDE when none is given: PI-HC-MoE, two experts along x blended across
# their seam, the initial condition by construction (exact for every weight vector), a
# small FNO; a run of a few minutes on a CPU.  Every key can be overridden.
NEW_PDE_DEFAULTS = [
    "data.nt=33", "data.nx=64", "data.generate.samples=520",
    "data.test_samples=8", "model.method=moe", "model.width=32", "model.modes=[8, 8]", "model.layers=4",
    "model.n_basis=16", "constraint.splits=[1, 2]", "constraint.n_points=1000", "constraint.overlap=[0, 4]",
    "constraint.blend=true", "constraint.initial_condition=construction", "optim.lr=3e-3",
    "optim.decay_every=200", "optim.steps=600", "run.checkpoint_every=100", "run.eval_every=100",
]


def train_problem(problem: str | None, out: str | Path, *, config: str | Path | None = None,
                  overrides: Sequence[str] = (), max_steps: int | None = None, progress: bool = True,
                  log: Callable[[str], None] = print, **options):
    """:func:`pihc.train`: ``(run_dir, model)`` of a new run of ``problem`` in ``out``."""
    base = [] if config is not None else list(NEW_PDE_DEFAULTS)
    if problem is None and config is None:
        raise ConfigError("give a problem ('module.path:Attribute') or a config")
    head = [] if problem is None else [f"problem={problem}"]
    if problem is not None and config is None:
        head.append(f"data.path=data/{str(problem).replace(':', '.')}.h5")
    opts = [f"problem_options.{k}={v!r}" if isinstance(v, str) else f"problem_options.{k}={v}"
            for k, v in options.items()]
    cfg = load_config(config, head + base + opts + list(overrides))
    run_dir = train(cfg, out, max_steps=max_steps, progress=progress, log=log)
    _, _, model, _ = load_run(run_dir, log)
    return run_dir, model
