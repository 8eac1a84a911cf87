"""Training: :func:`train` composes a run (data, model, optimiser, then a new or a resumed run
directory) with :func:`run_steps`, the loop over its steps.

Every step's batch and solver key are functions of ``(run.seed, step)``
only (:func:`~pihc.training.step.step_inputs`) and the learning-rate
schedule is that of the full ``optim.steps`` run, so a run stopped at a
checkpoint and resumed ends with the parameters and metrics of an
uninterrupted one, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..least_squares import require_x64
from .config import Config
from .data import PreparedData, load_initial, prepare_data
from .io import CHECKPOINT, MetricsLog, save_checkpoint
from .model import build_model, check_init_from, load_backbone
from .optim import learning_rate_schedule, make_optimizer
from .problems import get_problem
from .run import METRICS, resume_run, start_run
from .step import loss_grid, make_step, step_inputs


def train(cfg: Config, run_dir: str | Path, *, max_steps: int | None = None, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train ``cfg`` into ``run_dir``; ``resume`` continues from its checkpoint.

    ``max_steps`` stops early (at most ``cfg.optim.steps``); the learning-rate
    schedule is that of the full ``cfg.optim.steps`` run either way, so an
    interrupted run resumed later ends where an uninterrupted one does.
    """
    require_x64()
    run_dir = Path(run_dir)
    src_cfg = None if resume else check_init_from(cfg)
    loss_grid(cfg, get_problem(cfg.problem).grid(cfg.data.nt, cfg.data.nx))  # before any compute
    data = prepare_data(cfg, log)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(cfg.run.seed + 1))
    if src_cfg is not None:
        model = load_backbone(model, cfg.model.init_from, src_cfg, data.pde, log)
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    if resume:
        model, opt_state, start = resume_run(run_dir, model, opt_state, log)
    else:
        start_run(cfg, run_dir, data)
        start = 0
    end = cfg.optim.steps if max_steps is None else min(cfg.optim.steps, start + max_steps)
    run_steps(cfg, run_dir, data, optimizer, model, opt_state, start, end, progress=progress)
    return run_dir


def run_steps(cfg: Config, run_dir: Path, data: PreparedData, optimizer: optax.GradientTransformation,
              model: eqx.Module, opt_state, start: int, end: int, *, progress: bool = True
              ) -> tuple[eqx.Module, object]:
    """Steps ``start + 1 .. end`` of the run in ``run_dir``, from ``(model, opt_state)`` after ``start``
    steps; returns them after ``end``.

    Each step appends one line to ``metrics.jsonl``; ``checkpoint.eqx`` is
    written every ``run.checkpoint_every`` steps and after step ``end``.  The
    first ``constraint.global_steps`` steps solve with the experts tied into
    one problem.  A non-finite loss writes a checkpoint and raises
    FloatingPointError.
    """
    ckpt = run_dir / CHECKPOINT
    metrics = MetricsLog(run_dir / METRICS)
    u0_train = jnp.asarray(load_initial(cfg, data, data.train_idx))
    step_fn = make_step(cfg, optimizer, data.pde, data.grid)
    n_tied = cfg.constraint.global_steps  # validated: 0 unless method is moe
    tied_fn = make_step(cfg, optimizer, data.pde, data.grid, model.constraint.tied()) if start < n_tied else None
    schedule = learning_rate_schedule(cfg)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=start, desc=f"train {cfg.model.method}", dynamic_ncols=True)
    for step in range(start, end):
        idx, keys = step_inputs(cfg, step, len(data.train_idx))
        t0 = time.perf_counter()
        model, opt_state, aux = (tied_fn if step < n_tied else step_fn)(model, opt_state, u0_train[idx], keys)
        aux = jax.device_get(aux)
        dt = time.perf_counter() - t0
        rec = {"step": step + 1, "step_time_s": dt, "lr": float(schedule(step))}
        if n_tied:
            rec["tied_experts"] = int(step < n_tied)
        rec.update({k: (int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else float(v))
                    for k, v in aux.items()})
        if not math.isfinite(rec["loss"]):
            save_checkpoint(ckpt, (model, opt_state), {"step": step})
            raise FloatingPointError(f"loss is {rec['loss']} at step {step + 1}; the last finite state"
                                     f" is in {ckpt}")
        metrics.append(rec)
        if bar is not None:
            _show(bar, rec)
        if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == end:
            save_checkpoint(ckpt, (model, opt_state), {"step": step + 1})
    if bar is not None:
        bar.close()
    return model, opt_state


def _show(bar, rec: dict) -> None:
    """Advance the progress bar by one step and show the step's loss, residual and solver figures."""
    bar.update(1)
    skipped = rec.get("skipped_update", 0) == 1  # every solve failed: no loss to show
    bar.set_postfix(loss="skipped" if skipped else f"{rec['loss']:.3e}",
                    res="-" if skipped else f"{rec['pde']:.2e}",
                    it=f"{rec['solver_steps_mean']:.1f}", failed=rec["failed_solves"])
