"""The model of a run: the configured method built on a grid, its backbone carried between runs and grids.

* :func:`build_model` builds PI-SC, PI-HC or PI-HC-MoE from ``cfg.model``
  (the FNO backbone) and ``cfg.constraint`` (:func:`build_constraint`),
  raising ``ConfigError``/``GridError`` before any compute;
  :func:`check_constraint` does the layer's part before the data are made.
* ``model.init_from``: :func:`check_init_from` checks, with no compute, that
  the source run's backbone has this config's shape; :func:`load_backbone`
  puts it into a freshly built model.
* :func:`on_grid` moves a trained model to another grid (same backbone).
* :func:`read_model` reads the model saved in a run directory's checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax

from ..constraint import HardConstraint
from ..grid import Grid, GridError
from ..models.fno import FNO
from ..models.methods import PIHC, PISC, PIHCMoE, feature_count
from ..pdes.base import PDE
from .config import Config, ConfigError, check_unchanged, load_config
from .data import generated_pde
from .io import CHECKPOINT, load_checkpoint, read_checkpoint_meta
from .optim import make_optimizer
from .problems import problem_of


def build_model(cfg: Config, pde: PDE, grid: Grid, key) -> eqx.Module:
    """The configured method on ``grid`` (raises ConfigError/GridError before any compute)."""
    mc = cfg.model
    out = 1 if mc.method == "sc" else mc.n_basis
    try:
        backbone = FNO(feature_count(grid.ndim, mc.features), out, width=mc.width, modes=tuple(mc.modes),
                       n_layers=mc.layers, padding=tuple(mc.padding), key=key, dtype=mc.dtype)
        backbone.check(grid.shape)
    except ValueError as err:
        raise ConfigError(f"model (modes {tuple(mc.modes)}, padding {tuple(mc.padding)}) does not fit"
                          f" the grid {grid.shape}: {err}") from None
    extent = feature_extent(cfg)
    if mc.method == "sc":
        return PISC(backbone, pde, grid, extent, mc.features)
    constraint = build_constraint(cfg, pde, grid, constraint_splits(cfg, grid))
    return (PIHCMoE if mc.method == "moe" else PIHC)(backbone, constraint, extent, mc.features)


def check_constraint(cfg: Config, grid: Grid) -> None:
    """Build ``cfg``'s constraint layer on ``grid`` with the PDE its data are to be made with, and discard it.

    Called before a missing dataset is generated (minutes at the Navier-Stokes sizes), so that a
    constraint section the layer refuses is refused first, with :func:`build_model`'s ConfigError or
    GridError. Nothing to check for PI-SC, or where only the data can give the PDE.
    """
    if cfg.model.method == "sc":
        return
    pde = generated_pde(cfg)
    if pde is not None:
        build_constraint(cfg, pde, grid, constraint_splits(cfg, grid))


def constraint_splits(cfg: Config, grid: Grid) -> tuple[int, ...]:
    """Experts per grid axis: ``constraint.splits`` for PI-HC-MoE, one expert for PI-HC."""
    splits = tuple(cfg.constraint.splits) if cfg.model.method == "moe" else (1,) * grid.ndim
    if len(splits) != grid.ndim:
        raise ConfigError(f"constraint.splits {splits} needs one entry per grid axis {grid.names}")
    return splits


def feature_extent(cfg: Config) -> tuple[tuple[float, float], ...] | None:
    """The intervals the backbone's coordinate inputs are scaled by: the whole grid's when the
    model trains on a time window (``data.train_until``), so that a time is the same input while
    training on the window and when run on the whole interval; else None (the model grid's own)."""
    if cfg.data.train_until is None:
        return None
    return tuple((a.lo, a.hi) for a in problem_of(cfg).grid(cfg.data.shape).axes)


def build_constraint(cfg: Config, pde: PDE, grid: Grid, splits: tuple[int, ...]) -> HardConstraint:
    """The hard-constraint layer of ``cfg.constraint`` on ``grid`` with ``splits`` experts per axis
    (raises GridError naming the axis, or ConfigError).  The config's constraint section is the
    layer's arguments (:meth:`~pihc.training.config.ConstraintConfig.layer_options`)."""
    try:
        return HardConstraint(pde, grid, **dict(cfg.constraint.layer_options(), splits=splits))
    except GridError:  # names the axis already
        raise
    except ValueError as err:
        raise ConfigError(f"constraint: {err}") from None


def _backbone_signature(cfg: Config) -> dict:
    """What a backbone's array shapes depend on (the grid is not among them)."""
    mc = cfg.model
    return {"width": mc.width, "modes": tuple(mc.modes), "layers": mc.layers, "padding": tuple(mc.padding),
            "outputs": 1 if mc.method == "sc" else mc.n_basis, "dtype": mc.dtype,
            "features": mc.features}


def check_init_from(cfg: Config) -> Config | None:
    """The config of ``cfg.model.init_from``'s run, after checking (with no compute) that its
    checkpoint exists and its backbone has this config's shape; None when unset."""
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
    grid = problem_of(src_cfg).grid(src_cfg.data.shape)
    src_model, meta = read_model(src_cfg, pde, grid, src_dir)
    log(f"backbone initialised from {src_dir} (step {meta['step']}, grid {' x '.join(map(str, grid.shape))})")
    return _with_backbone(model, src_model.backbone)


def _with_backbone(model: eqx.Module, backbone: eqx.Module) -> eqx.Module:
    return eqx.tree_at(lambda m: m.backbone, model, backbone)


def on_grid(cfg: Config, model: eqx.Module, pde: PDE, *shape: int) -> tuple[Config, eqx.Module, Grid]:
    """A trained model moved to a grid of ``shape`` (``nt, nx[, ny]``): the same backbone (coordinates are scaled
    to [0, 1] and the modes are fixed, so it applies on any grid), the method and its
    constraint settings rebuilt there.  An ``overlap`` (grid points) is scaled with the grid so
    that the experts' shared region, and a blend across it, keep their physical width.
    Returns ``(cfg, model, grid)`` for that grid."""
    old = cfg.data.shape
    if len(shape) != len(old):
        raise GridError(f"the run's grid has {len(old)} axes {old}; {len(shape)} sizes {shape} were given")
    if cfg.constraint.overlap is not None:
        overlap = tuple(int(round(h * n / o)) for h, n, o in zip(cfg.constraint.overlap, shape, old))
        cfg = dataclasses.replace(cfg, constraint=dataclasses.replace(cfg.constraint, overlap=overlap))
    sizes = dict(zip(("nt", "nx", "ny"), (int(n) for n in shape)))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **sizes))
    grid = problem_of(cfg).grid(cfg.data.shape)
    moved = build_model(cfg, pde, grid, jax.random.key(cfg.run.seed + 1))
    return cfg, _with_backbone(moved, model.backbone), grid


def read_model(cfg: Config, pde: PDE, grid: Grid, run_dir: str | Path) -> tuple[eqx.Module, dict]:
    """``(model, meta)`` saved in ``run_dir``'s checkpoint (built from ``cfg`` on ``grid`` as the template).

    Raises ConfigError naming the keys if ``cfg`` is not the config the checkpoint was trained with,
    and :class:`~pihc.training.io.CheckpointError` if the checkpoint is damaged."""
    ckpt = Path(run_dir) / CHECKPOINT
    check_unchanged(cfg, read_checkpoint_meta(ckpt), Path(run_dir))
    model = build_model(cfg, pde, grid, jax.random.key(cfg.run.seed + 1))
    opt_state = make_optimizer(cfg).init(eqx.filter(model, eqx.is_inexact_array))
    (model, _), meta = load_checkpoint(ckpt, (model, opt_state))
    return model, meta
