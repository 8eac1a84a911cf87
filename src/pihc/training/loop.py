"""Training: :func:`train` composes a run (data, model, optimiser, then a new or a resumed run
directory) with :func:`run_steps`, the loop over its steps.

Every step's batch and solver key are functions of ``(run.seed, step)``
only (:func:`~pihc.training.step.step_inputs`) and the learning-rate
schedule is that of the full ``optim.steps`` run, so a run stopped at a
checkpoint and resumed ends with the parameters and metrics of an
uninterrupted one, bit for bit.

A run directory is locked while a process trains in it (:class:`~pihc.training.run.RunLock`).
A step whose loss, gradient or updated parameters are not finite, or in
which every sample's solve failed, stops the run (:class:`DivergenceError`):
the step is recorded in ``metrics.jsonl`` and the checkpoint holds the
last finite state, never the bad one.  An interrupt (Ctrl-C, or SIGTERM
through the command line) saves the last finished step before it stops.

On a device mesh (``cfg.mesh``, :mod:`pihc.sharding`) the step is data
parallel along ``batch`` and shards the experts along ``expert``; the
batch of a step is the same whatever the mesh, so a run can resume on
another number of devices.  In a run of several processes
(:func:`jax.distributed.initialize`) every process computes its devices'
share of each step and reads only its devices' samples; process 0 alone
writes the run directory (lock, config, metrics, checkpoints).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..files import check_writable
from ..least_squares import require_x64
from ..partition import check_splits
from ..sharding import MeshError, device_mesh, replicated, sharded_batch
from .config import Config, ConfigError, config_json, validate
from .data import PreparedData, has_reference, load_fields, load_initial, model_grids, prepare_data
from .io import CHECKPOINT, MetricsLog, save_checkpoint
from .model import build_model, check_constraint, check_init_from, load_backbone
from .optim import learning_rate_schedule, make_optimizer
from .run import METRICS, RunLock, check_resumable, resume_run, run_data_path, start_run
from .step import loss_grid, make_step, step_inputs


class DivergenceError(FloatingPointError):
    """A training step produced a non-finite loss, gradient or state, or every solve of it failed."""


def train(cfg: Config, run_dir: str | Path, *, max_steps: int | None = None, resume: bool = False,
          progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train ``cfg`` into ``run_dir``; ``resume`` continues from its checkpoint.

    ``max_steps`` (>= 1) stops early (at most ``cfg.optim.steps``); the
    learning-rate schedule is that of the full ``cfg.optim.steps`` run either
    way, so an interrupted run resumed later ends where an uninterrupted one
    does.  Everything that can be checked without compute is checked first:
    the config, the data, the model, that ``run_dir`` can be written and
    holds a checkpoint to resume (or none, for a new run).  Raises
    :class:`DivergenceError` when a step is not finite (module docstring) and
    :class:`~pihc.training.run.RunLockedError` when another process trains in
    ``run_dir``.
    """
    require_x64()
    validate(cfg)
    run_dir = Path(run_dir)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps} (leave it unset to train to optim.steps)")
    mesh = run_mesh(cfg)
    primary = jax.process_index() == 0
    if not primary:  # process 0 owns the run directory; the others only read it
        log = lambda s: None  # noqa: E731
        progress = False
    else:
        check_writable(run_dir, "run directory", directory=True)
    check_resumable(run_dir, resume)
    src_cfg = None if resume else check_init_from(cfg)
    grid = model_grids(cfg)[0]  # the problem refuses a grid it cannot live on: before any compute
    loss_grid(cfg, grid)
    if cfg.model.method == "moe":
        check_splits(grid.shape, cfg.constraint.splits, grid.names)
    # A resumed run reads the file it trained on, also from another directory (run.json).
    path = run_data_path(cfg, Path(run_dir), log) if resume else Path(cfg.data.path)
    if not path.exists():
        check_constraint(cfg, grid)
    data = prepare_data(cfg, log, progress=progress, path=path)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(cfg.run.seed + 1))
    if src_cfg is not None:
        model = load_backbone(model, cfg.model.init_from, src_cfg, data.pde, log)
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    # A bad sample is refused before the run directory is made.  Several processes: each reads
    # its own samples, step by step.
    u0_train = load_initial(cfg, data, data.train_idx) if jax.process_count() == 1 else None
    with RunLock(run_dir) if primary else contextlib.nullcontext():
        if resume:
            model, opt_state, start = resume_run(cfg, run_dir, model, opt_state, log, primary=primary)
        elif primary:
            start_run(cfg, run_dir, data, log)
            start = 0
        else:
            start = 0
        end = cfg.optim.steps if max_steps is None else min(cfg.optim.steps, start + max_steps)
        if start >= end:
            log(f"{run_dir} has finished all {cfg.optim.steps} steps (optim.steps); nothing to train")
        else:
            run_steps(cfg, run_dir, data, optimizer, model, opt_state, start, end, progress=progress,
                      saved=start if resume else None, log=log, u0_train=u0_train, mesh=mesh)
    return run_dir


def run_mesh(cfg: Config) -> jax.sharding.Mesh | None:
    """The mesh of ``cfg.mesh`` on this run's devices (every process's, in a multi-host run); None
    for one device in one process (the one-device step).  Raises ConfigError, before any compute,
    for a mesh the devices cannot take."""
    b, e = cfg.mesh.batch, cfg.mesh.expert
    if b * e == 1 and jax.process_count() == 1:
        return None
    try:
        if jax.process_count() > 1 and b * e != jax.device_count():
            raise MeshError(f"mesh {{batch: {b}, expert: {e}}} uses {b * e} of the {jax.device_count()} devices"
                            f" of the {jax.process_count()} processes; a multi-host run uses them all"
                            " (give --devices auto, or a mesh whose batch x expert is the number of devices)")
        return device_mesh(b, e)
    except MeshError as err:
        raise ConfigError(str(err)) from None


def _on_mesh(tree, mesh):
    """``tree``'s arrays as global arrays replicated on ``mesh`` (made from the host copy every
    process holds, so it works across processes)."""
    sharding = replicated(mesh)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(lambda x: put(x) if eqx.is_array(x) else x, tree)


def _step_batch(mesh, idx: np.ndarray, keys, rows: Callable[[np.ndarray], np.ndarray], space: tuple[int, ...]):
    """``(u0, keys)`` of a step split along the mesh's ``batch`` axis; each process calls ``rows``
    (training samples -> their initial conditions) only for its own devices' samples."""
    sharding = sharded_batch(mesh)
    u0 = jax.make_array_from_callback((len(idx),) + space, sharding,
                                      lambda index: np.asarray(rows(idx[index[0]]), np.float64))
    data = np.asarray(jax.random.key_data(keys))
    raw = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
    return u0, jax.random.wrap_key_data(raw, impl=jax.random.key_impl(keys))


def _bad_step(rec: dict, batch: int) -> list[str]:
    """Why a step's record is not a finite, usable step (empty when it is)."""
    why = []
    if rec.get("skipped_update", 0):
        why.append(f"every solve failed ({rec['failed_solves']} of {batch} samples)")
    for key, name in (("loss", "the loss"), ("grad_norm", "the gradient norm")):
        if key in rec and not math.isfinite(rec[key]):
            why.append(f"{name} is {rec[key]}")
    if not rec.pop("finite_state", 1):
        why.append("the updated parameters or optimiser state are not finite")
    return why


def run_steps(cfg: Config, run_dir: Path, data: PreparedData, optimizer: optax.GradientTransformation,
              model: eqx.Module, opt_state, start: int, end: int, *, progress: bool = True,
              saved: int | None = None, log: Callable[[str], None] = print, u0_train=None,
              mesh: jax.sharding.Mesh | None = None) -> tuple[eqx.Module, object]:
    """Steps ``start + 1 .. end`` of the run in ``run_dir``, from ``(model, opt_state)`` after ``start``
    steps; returns them after ``end``.

    Each step appends one line to ``metrics.jsonl``; ``checkpoint.eqx`` is
    written every ``run.checkpoint_every`` steps and after step ``end``.  The
    first ``constraint.global_steps`` steps solve with the experts tied into
    one problem.  ``saved``: the step of the checkpoint already on disk
    (None: there is none).  ``u0_train``: the training samples' initial
    conditions, if already loaded.  ``mesh``: train on it (:func:`run_mesh`); in a run of several
    processes only process 0 writes.

    A step that is not finite, or whose every solve failed, is logged (its
    non-finite numbers as null, with a ``stopped`` reason), the state before
    it is checkpointed if it is newer than the one on disk, and
    :class:`DivergenceError` says which step that is.  An interrupt
    (KeyboardInterrupt) checkpoints the last finished step and re-raises.
    """
    ckpt = run_dir / CHECKPOINT
    primary = jax.process_index() == 0
    metrics = MetricsLog(run_dir / METRICS)
    if u0_train is None and jax.process_count() == 1:
        u0_train = load_initial(cfg, data, data.train_idx)
    if u0_train is not None:
        u0_train = np.asarray(u0_train)
        rows = lambda ix: u0_train[ix]  # noqa: E731
    else:  # several processes: each loads its devices' samples of each step
        rows = lambda ix: load_initial(cfg, data, data.train_idx[ix])  # noqa: E731
    step_fn = make_step(cfg, optimizer, data.pde, data.grid, mesh=mesh)
    n_tied = cfg.constraint.global_steps  # validated: 0 unless method is moe
    tied_fn = make_step(cfg, optimizer, data.pde, data.grid, model.constraint.tied(), mesh=mesh) \
        if start < n_tied else None
    schedule = learning_rate_schedule(cfg)
    config = config_json(cfg)
    every = cfg.run.eval_every
    heldout = _heldout_error(cfg, data, log) if every > 0 and end // every > start // every else None
    if mesh is not None:
        model, opt_state = _on_mesh((model, opt_state), mesh)
    u0_one = None if mesh is not None else jnp.asarray(u0_train)

    def save(done: int, model, opt_state) -> None:
        nonlocal saved
        if primary:  # the arrays are replicated: process 0's copy is the state
            save_checkpoint(ckpt, (model, opt_state), {"step": done, "config": config})
        saved = done

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=end, initial=start, desc=f"train {cfg.model.method}", dynamic_ncols=True)
    state = (start, model, opt_state)  # one assignment, so an interrupt never sees a mix of two steps
    try:
        for step in range(start, end):
            idx, keys = step_inputs(cfg, step, len(data.train_idx))
            t0 = time.perf_counter()
            if mesh is None:
                u0, keys = u0_one[idx], keys
            else:
                u0, keys = _step_batch(mesh, idx, keys, rows, data.grid.shape[1:])
            new_model, new_state, aux = (tied_fn if step < n_tied else step_fn)(state[1], state[2], u0, keys)
            aux = jax.device_get(aux)
            dt = time.perf_counter() - t0
            rec = {"step": step + 1, "step_time_s": dt, "lr": float(schedule(step))}
            if n_tied:
                rec["tied_experts"] = int(step < n_tied)
            rec.update({k: (int(v) if np.issubdtype(np.asarray(v).dtype, np.integer) else float(v))
                        for k, v in aux.items()})
            why = _bad_step(rec, cfg.optim.batch)
            if heldout is not None and not why and (step + 1) % cfg.run.eval_every == 0:
                rec["heldout_rel_l2"] = heldout(new_model)
            if why:
                rec["stopped"] = "; ".join(why)
            if primary:
                metrics.append(rec)
            if why:
                _stop(cfg, run_dir, step, why, state, saved, save)
            state = (step + 1, new_model, new_state)
            if bar is not None:
                _show(bar, rec)
            if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == end:
                save(*state)
    except KeyboardInterrupt:
        if saved is None or state[0] > saved:
            save(*state)
            log(f"interrupted: step {state[0]} saved in {ckpt}; continue with `pihc train --resume {run_dir}`")
        raise
    finally:
        if bar is not None:
            bar.close()
    return state[1], state[2]


def _heldout_error(cfg: Config, data: PreparedData, log: Callable[[str], None]):
    """``model -> mean relative L2 error`` on the first ``run.eval_samples`` held-out samples (compiled
    once; the same solver keys every time), or None when the problem cannot be scored."""
    if not has_reference(cfg, data):
        log(f"run.eval_every: no reference solutions ({data.path} is missing and the problem has no solver);"
            " the held-out error is not logged")
        return None
    truth = jnp.asarray(load_fields(cfg, data, data.test_idx[:cfg.run.eval_samples], log))
    from .evaluation import chunk_keys

    # The keys (sampled points) of `pihc evaluate` for the same samples: the same numbers.
    keys = jnp.concatenate([chunk_keys(cfg.run.seed, i, min(8, len(truth) - i)) for i in range(0, len(truth), 8)])
    axes = tuple(range(1, truth.ndim))
    norm = jnp.sqrt(jnp.sum(truth**2, axis=axes))

    @eqx.filter_jit
    def error(model):
        u = jax.vmap(lambda a, k: model(a, k).u)(truth[:, 0], keys)
        return jnp.mean(jnp.sqrt(jnp.sum((u - truth) ** 2, axis=axes)) / norm)

    return lambda model: float(error(model))


def _stop(cfg: Config, run_dir: Path, step: int, why: list[str], state, saved: int | None, save) -> None:
    """Keep the last finite state (``state``: after ``step`` steps) and raise DivergenceError."""
    done = state[0]
    if done > 0 and (saved is None or done > saved):
        save(*state)
        saved = done
    if saved is None:
        where, then = f"no step finished with a finite state, so {run_dir} has no checkpoint", "start it again"
    else:
        where = f"the last finite state, after step {saved}, is in {run_dir / CHECKPOINT}"
        then = f"start a new run (--init-from {run_dir} starts from that state's backbone)"
    if all(w.startswith("every solve failed") for w in why):
        fix = ("The constraint solver failed on every sample: raise constraint.solver.max_steps, loosen"
               " constraint.solver.rtol or lower optim.lr")
    else:
        fix = f"The run diverged: lower optim.lr (now {cfg.optim.lr:g}) or optim.clip (now {cfg.optim.clip:g})"
    raise DivergenceError(f"step {step + 1} of {run_dir} is not usable ({'; '.join(why)}); the run stopped and"
                          f" {where}. {fix}, then {then}")


def _show(bar, rec: dict) -> None:
    """Advance the progress bar by one step and show the step's loss, residual and solver figures."""
    bar.update(1)
    skipped = rec.get("skipped_update", 0) == 1  # every solve failed: no loss to show
    bar.set_postfix(loss="skipped" if skipped else f"{rec['loss']:.3e}",
                    res="-" if skipped else f"{rec['pde']:.2e}",
                    it=f"{rec['solver_steps_mean']:.1f}", failed=rec["failed_solves"])
