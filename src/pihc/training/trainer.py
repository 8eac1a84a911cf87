"""The trainer: data preparation, model construction, the training loop, resume.

A run directory holds ``config.yaml`` (resolved), ``checkpoint.eqx`` (model
and optimiser state, written atomically every ``run.checkpoint_every`` steps
and at the end), ``metrics.jsonl`` (one line per step) and ``run.json``
(package version, seeds, data file).

Every step's batch and solver key are functions of ``(run.seed, step)``
only, so ``resume`` continues exactly where a run stopped: the final
parameters equal those of an uninterrupted run.

Solves that fail (``Solution.status != 0``) are counted in the metrics
(``failed_solves``) and their samples are left out of that step's loss and
gradient; they are never used as if converged.  A step in which every
sample's solve failed changes nothing (``skipped_update`` = 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import __version__
from ..constraint import HardConstraint
from ..grid import Grid, GridError
from ..least_squares import require_x64
from ..losses import LossWeights, physics_loss
from ..models.fno import FNO
from ..models.methods import PIHC, PISC, PIHCMoE
from ..pdes.base import PDE
from .config import Config, ConfigError, save_config, to_dict
from .io import MetricsLog, atomic_write_text, load_checkpoint, save_checkpoint
from .problems import get_problem

CHECKPOINT = "checkpoint.eqx"


def build_model(cfg: Config, pde: PDE, grid: Grid, key) -> eqx.Module:
    """The configured method on ``grid`` (raises ConfigError/GridError before any compute)."""
    mc, cc = cfg.model, cfg.constraint
    out = 1 if mc.method == "sc" else mc.n_basis
    try:
        backbone = FNO(grid.ndim + 1, out, width=mc.width, modes=tuple(mc.modes), n_layers=mc.layers,
                       padding=tuple(mc.padding), key=key)
        backbone.check(grid.shape)
    except ValueError as err:
        raise ConfigError(f"model (modes {tuple(mc.modes)}, padding {tuple(mc.padding)}) does not fit"
                          f" the grid {grid.shape}: {err}") from None
    if mc.method == "sc":
        return PISC(backbone, pde, grid)
    splits = tuple(cc.splits) if mc.method == "moe" else (1,) * grid.ndim
    if len(splits) != grid.ndim:
        raise ConfigError(f"constraint.splits {splits} needs one entry per grid axis {grid.names}")
    try:
        constraint = HardConstraint(pde, grid, **dict(cc.layer_options(), splits=splits))
    except GridError:  # names the axis already
        raise
    except ValueError as err:
        raise ConfigError(f"constraint: {err}") from None
    return (PIHCMoE if mc.method == "moe" else PIHC)(backbone, constraint)


def _backbone_signature(cfg: Config) -> dict:
    mc = cfg.model
    return {"width": mc.width, "modes": tuple(mc.modes), "layers": mc.layers, "padding": tuple(mc.padding),
            "outputs": 1 if mc.method == "sc" else mc.n_basis}


def check_init_from(cfg: Config) -> Config | None:
    """The config of ``cfg.model.init_from``'s run, after checking (with no compute) that its
    checkpoint exists and its backbone has this config's shape; None when unset."""
    from .config import load_config

    src = cfg.model.init_from
    if src is None:
        return None
    src_dir = Path(src)
    if not (src_dir / "config.yaml").is_file() or not (src_dir / CHECKPOINT).is_file():
        raise ConfigError(f"model.init_from: {src_dir} is not a trained run directory (it needs config.yaml"
                          f" and {CHECKPOINT}); give the --out directory of a `pihc train` run")
    src_cfg = load_config(src_dir / "config.yaml")
    mine, theirs = _backbone_signature(cfg), _backbone_signature(src_cfg)
    diff = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k]}
    if diff:
        raise ConfigError(f"model.init_from: the backbone of {src_dir} does not fit this config: "
                          + ", ".join(f"{k} {a} there, {b} here" for k, (a, b) in diff.items())
                          + "; set model.* to the source run's values or train from scratch")
    return src_cfg


def load_backbone(model: eqx.Module, src_dir: str | Path, src_cfg: Config, pde: PDE,
                  log: Callable[[str], None] = print) -> eqx.Module:
    """``model`` with the backbone of the run in ``src_dir`` (checked by :func:`check_init_from`).

    The source model is rebuilt on its own grid (only its array shapes matter,
    and the backbone's do not depend on the grid) and its checkpoint read into it.
    """
    grid = get_problem(src_cfg.problem).grid(src_cfg.data.nt, src_cfg.data.nx)
    src_model, meta = _read_model(src_cfg, pde, grid, src_dir)
    log(f"backbone initialised from {src_dir} (step {meta['step']}, grid {src_cfg.data.nt} x {src_cfg.data.nx})")
    return _with_backbone(model, src_model.backbone)


def _with_backbone(model: eqx.Module, backbone: eqx.Module) -> eqx.Module:
    return eqx.tree_at(lambda m: m.backbone, model, backbone)


def on_grid(cfg: Config, model: eqx.Module, pde: PDE, nt: int, nx: int) -> tuple[Config, eqx.Module, Grid]:
    """A trained model moved to an ``nt x nx`` grid: the same backbone (coordinates are scaled
    to [0, 1] and the modes are fixed, so it applies on any grid), the method and its
    constraint settings rebuilt there.  An ``overlap`` (grid points) is scaled with the grid so
    that the experts' shared region, and a blend across it, keep their physical width.
    Returns ``(cfg, model, grid)`` for that grid."""
    old = (cfg.data.nt, cfg.data.nx)
    if cfg.constraint.overlap is not None:
        overlap = tuple(int(round(h * n / o)) for h, n, o in zip(cfg.constraint.overlap, (nt, nx), old))
        cfg = dataclasses.replace(cfg, constraint=dataclasses.replace(cfg.constraint, overlap=overlap))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, nt=nt, nx=nx))
    grid = get_problem(cfg.problem).grid(nt, nx)
    moved = build_model(cfg, pde, grid, jax.random.key(cfg.run.seed + 1))
    return cfg, _with_backbone(moved, model.backbone), grid


def learning_rate_schedule(cfg: Config) -> optax.Schedule:
    """Step -> learning rate: ``lr`` halved (``decay_rate``) every ``decay_every`` steps down to
    ``min_lr``, after a linear ramp from 0 over ``warmup`` steps if ``warmup`` > 0."""
    o = cfg.optim
    if o.warmup:
        return optax.warmup_exponential_decay_schedule(
            0.0, o.lr, o.warmup, o.decay_every, o.decay_rate, staircase=True, end_value=o.min_lr)
    return optax.exponential_decay(o.lr, o.decay_every, o.decay_rate, staircase=True, end_value=o.min_lr)


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.optim.clip), optax.adam(learning_rate_schedule(cfg)))


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything the trainer and evaluator need from the dataset."""

    pde: PDE
    grid: Grid
    data_grid: Grid
    path: str
    train_idx: np.ndarray
    test_idx: np.ndarray


def prepare_data(cfg: Config, log: Callable[[str], None] = print) -> PreparedData:
    """Open (or generate, when missing) the configured dataset and split it."""
    problem = get_problem(cfg.problem)
    path = Path(cfg.data.path)
    if not path.exists():
        g = cfg.data.generate
        log(f"data file {path} not found: generating it ({g.samples} samples at {g.nt} x {g.nx},"
            f" seed {g.seed}, ic {g.ic!r})")
        problem.generate(path, g)
    ds = problem.open(path)
    grid = problem.grid(cfg.data.nt, cfg.data.nx)
    ds.grid.factors_to(grid)  # raises a GridError naming the axis if not an integer multiple
    n = len(ds.samples)
    n_test = cfg.data.test_samples
    n_train = cfg.data.train_samples if cfg.data.train_samples is not None else n - n_test
    if n_test + n_train > n:
        raise ConfigError(f"{path} has {n} samples; {n_train} train + {n_test} test requested")
    test_idx = np.arange(n - n_test, n)
    train_idx = np.arange(0, n_train)
    return PreparedData(ds.pde, grid, ds.grid, str(path), train_idx, test_idx)


def load_fields(cfg: Config, data: PreparedData, indices) -> np.ndarray:
    """Solutions of the given samples restricted to the model grid: (n, *grid)."""
    ds = get_problem(cfg.problem).open(Path(data.path))
    u = ds.load(np.asarray(indices))
    factors = data.data_grid.factors_to(data.grid)
    return np.stack([data.data_grid.restrict(v, factors) for v in u])


def load_initial(cfg: Config, data: PreparedData, indices) -> np.ndarray:
    """Initial conditions of the given samples on the model grid: (n, *space)."""
    return load_fields(cfg, data, indices)[:, 0]


def loss_grid(cfg: Config, grid: Grid) -> tuple[Grid, dict[str, int]]:
    """The grid the training loss is evaluated on (``loss.coarsen``) and the factors to it."""
    if cfg.loss.coarsen is None:
        return grid, {}
    factors = dict(zip(grid.names, cfg.loss.coarsen))
    try:
        return grid.coarsen(factors), factors
    except GridError as err:
        raise ConfigError(f"loss.coarsen {list(cfg.loss.coarsen)} does not divide the grid {grid.shape}: {err}"
                          ) from None


def _batch_loss(model, u0, keys, pde, grid, weights, coarse=None):
    pred = jax.vmap(lambda a, k: model(a, k))(u0, keys)
    if pred.constrained is not None:
        status = pred.constrained.solution.status  # (B, K)
        ok = jnp.all(status == 0, axis=-1)
        steps = pred.constrained.solution.num_steps
    else:
        ok = jnp.ones(u0.shape[0], bool)
        steps = jnp.zeros((u0.shape[0], 1), jnp.int32)
    # Failed solves: replace u by zeros before the loss, so no NaN/Inf from
    # them reaches the gradient (a where after the loss would still
    # propagate 0 * NaN), and weight them out.
    u = jnp.where(ok.reshape((-1,) + (1,) * (pred.u.ndim - 1)), pred.u, 0.0)
    with jax.named_scope("pihc.loss"):
        if coarse is not None:  # (grid, factors): restrict the prediction and the initial condition
            fine, (grid, factors) = grid, coarse
            u = jax.vmap(lambda v: fine.restrict(v, factors))(u)
            u0 = jax.vmap(lambda a: fine.restrict(a[None], factors)[0])(u0)
        losses, parts = jax.vmap(lambda v, a: physics_loss(pde, v, a, grid, weights))(u, u0)
    n_ok = jnp.sum(ok)
    w = ok / jnp.maximum(n_ok, 1)
    loss = jnp.sum(w * losses)
    aux = {"loss": loss, "pde": jnp.sum(w * parts["pde"]), "initial": jnp.sum(w * parts["initial"]),
           "boundary": jnp.sum(w * parts["boundary"]), "failed_solves": jnp.sum(~ok),
           "solver_steps_mean": jnp.mean(steps), "solver_steps_max": jnp.max(steps)}
    return loss, aux


def make_step(cfg: Config, optimizer, pde: PDE, grid: Grid, constraint: HardConstraint | None = None):
    """The jitted training step ``(model, opt_state, u0, keys) -> (model, opt_state, aux)``.

    ``constraint``: solve with this constraint in place of the model's own
    (``constraint.global_steps``: the experts tied into one problem).  Only
    the forward pass changes; the parameters, their gradients and the
    optimiser state keep the model's structure.
    """
    weights = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)
    coarse = loss_grid(cfg, grid) if cfg.loss.coarsen is not None else None

    def loss_fn(model, u0, keys):
        if constraint is not None:
            model = eqx.tree_at(lambda m: m.constraint, model, constraint)
        return _batch_loss(model, u0, keys, pde, grid, weights, coarse)

    @eqx.filter_jit
    def step(model, opt_state, u0, keys):
        (_, aux), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, u0, keys)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_model = eqx.apply_updates(model, updates)
        # A step whose every solve failed has no gradient at all; leave the
        # parameters and the optimiser's moments as they were, rather than
        # let Adam's momentum move the parameters on stale information.
        any_ok = aux["failed_solves"] < u0.shape[0]
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(any_ok, a, b), new, old)  # noqa: E731
        arrays = keep(eqx.filter(new_model, eqx.is_array), eqx.filter(model, eqx.is_array))
        model = eqx.combine(arrays, eqx.filter(model, eqx.is_array, inverse=True))
        opt_state = keep(new_state, opt_state)
        aux["grad_norm"] = optax.tree.norm(grads)
        aux["skipped_update"] = (~any_ok).astype(jnp.int32)
        return model, opt_state, aux

    return step


def step_inputs(cfg: Config, step: int, n_train: int):
    """The batch indices and solver keys of ``step``: a function of (seed, step) only."""
    key = jax.random.fold_in(jax.random.key(cfg.run.seed), step)
    k_batch, k_solve = jax.random.split(key)
    B = cfg.optim.batch
    idx = jax.random.choice(k_batch, n_train, (B,), replace=n_train < B)
    return np.asarray(idx), jax.random.split(k_solve, B)


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
    ckpt = run_dir / CHECKPOINT
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    start = 0
    if resume:
        (model, opt_state), meta = load_checkpoint(ckpt, (model, opt_state))
        start = meta["step"]
        metrics.truncate_after(start)
        log(f"resuming {run_dir} from step {start}")
    else:
        if ckpt.exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or"
                                  " choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        atomic_write_text(run_dir / "run.json", json.dumps({
            "pihc_version": __version__, "jax_version": jax.__version__, "seed": cfg.run.seed,
            "data": data.path, "train_samples": len(data.train_idx),
            "test_samples": len(data.test_idx), "grid": data.grid.to_dict(),
            "config": to_dict(cfg)}, indent=2))
        metrics.truncate_after(-1)
    u0_train = jnp.asarray(load_initial(cfg, data, data.train_idx))
    end = cfg.optim.steps if max_steps is None else min(cfg.optim.steps, start + max_steps)
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
            bar.update(1)
            skipped = rec.get("skipped_update", 0) == 1  # every solve failed: no loss to show
            bar.set_postfix(loss="skipped" if skipped else f"{rec['loss']:.3e}",
                            res="-" if skipped else f"{rec['pde']:.2e}",
                            it=f"{rec['solver_steps_mean']:.1f}", failed=rec["failed_solves"])
        if (step + 1) % cfg.run.checkpoint_every == 0 or step + 1 == end:
            save_checkpoint(ckpt, (model, opt_state), {"step": step + 1})
    if bar is not None:
        bar.close()
    return run_dir


def load_run(run_dir: str | Path, log: Callable[[str], None] = print):
    """``(cfg, data, model, meta)`` of a trained run directory."""
    from .config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    data = prepare_data(cfg, log)
    model, meta = _read_model(cfg, data.pde, data.grid, run_dir)
    return cfg, data, model, meta


def _read_model(cfg: Config, pde: PDE, grid: Grid, run_dir: Path) -> tuple[eqx.Module, dict]:
    """The model saved in ``run_dir``'s checkpoint (built from ``cfg`` on ``grid`` as the template)."""
    model = build_model(cfg, pde, grid, jax.random.key(cfg.run.seed + 1))
    opt_state = make_optimizer(cfg).init(eqx.filter(model, eqx.is_inexact_array))
    (model, _), meta = load_checkpoint(Path(run_dir) / CHECKPOINT, (model, opt_state))
    return model, meta
