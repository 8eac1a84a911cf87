"""The run directory: starting a run in it, resuming the run it holds, reading a trained one.

A run directory holds ``config.yaml`` (resolved), ``checkpoint.eqx`` (model
and optimiser state, written atomically every ``run.checkpoint_every`` steps
and at the end by :func:`~pihc.training.loop.run_steps`), ``metrics.jsonl``
(one line per step) and ``run.json`` (package version, seeds, data file).

* :func:`start_run` writes a new run's ``config.yaml``, ``run.json`` and an
  empty ``metrics.jsonl``, and refuses a directory that already holds a run.
* :func:`resume_run` reads the checkpoint back and cuts ``metrics.jsonl`` to
  its step, so the steps after it are logged once, by the resumed run.
* :func:`load_run` reads a trained run: its config, data and model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax

from .. import __version__
from .config import Config, load_config, save_config, to_dict
from .data import PreparedData, prepare_data
from .io import CHECKPOINT, MetricsLog, atomic_write_text, load_checkpoint
from .model import read_model

METRICS = "metrics.jsonl"


def start_run(cfg: Config, run_dir: Path, data: PreparedData) -> None:
    """Create ``run_dir`` for a new run of ``cfg`` on ``data``: ``config.yaml``, ``run.json`` and an
    empty ``metrics.jsonl``.  Raises FileExistsError if ``run_dir`` already holds a checkpoint."""
    if (run_dir / CHECKPOINT).exists():
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or"
                              " choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_text(run_dir / "run.json", json.dumps({
        "pihc_version": __version__, "jax_version": jax.__version__, "seed": cfg.run.seed,
        "data": data.path, "train_samples": len(data.train_idx),
        "test_samples": len(data.test_idx), "grid": data.grid.to_dict(),
        "config": to_dict(cfg)}, indent=2))
    MetricsLog(run_dir / METRICS).truncate_after(-1)


def resume_run(run_dir: Path, model: eqx.Module, opt_state, log: Callable[[str], None] = print
               ) -> tuple[eqx.Module, object, int]:
    """``(model, opt_state, step)`` of ``run_dir``'s checkpoint (``model`` and ``opt_state``: the
    templates it is read into), after dropping the metrics lines of steps beyond ``step``."""
    (model, opt_state), meta = load_checkpoint(run_dir / CHECKPOINT, (model, opt_state))
    start = meta["step"]
    MetricsLog(run_dir / METRICS).truncate_after(start)
    log(f"resuming {run_dir} from step {start}")
    return model, opt_state, start


def load_run(run_dir: str | Path, log: Callable[[str], None] = print):
    """``(cfg, data, model, meta)`` of a trained run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    data = prepare_data(cfg, log)
    model, meta = read_model(cfg, data.pde, data.grid, run_dir)
    return cfg, data, model, meta
