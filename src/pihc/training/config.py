"""One source of configuration: frozen dataclasses, loaded from YAML.

Unknown keys are errors; ``--set a.b=value`` overrides parse ``value`` as
YAML.  The resolved config is saved beside every run (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """How to make the dataset when its file is missing (``pihc generate``)."""

    samples: int = 1000
    nx: int = 1024
    nt: int = 101
    seed: int = 0
    ic: str = "pdebench"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The dataset and the model's grid.

    ``path`` is relative to the working directory.  Data on a finer grid that
    is an integer multiple of ``(nt, nx)`` is subsampled.  The last
    ``test_samples`` samples are held out (PDEBench's file: seeds 9000-9999).
    """

    path: str = "data/diffusion-sorption.h5"
    generate: GeneratorConfig = GeneratorConfig()
    nt: int = 101
    nx: int = 1024
    train_samples: int | None = None
    test_samples: int = 100


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone and method: ``method`` is ``sc``, ``hc`` or ``moe``.

    ``init_from``: a trained run directory whose backbone starts this run
    (fine-tuning, or coarse-to-fine training: the FNO sees coordinates scaled
    to [0, 1] and keeps a fixed number of modes, so its weights apply on any
    grid).  Width, modes, layers and the number of outputs must match; the
    optimiser state starts afresh.
    """

    method: str = "moe"
    width: int = 64
    modes: tuple[int, ...] = (8, 8)
    layers: int = 5
    n_basis: int = 16
    padding: tuple[int, ...] = (0, 0)
    init_from: str | None = None


@dataclasses.dataclass(frozen=True)
class ConstraintConfig:
    """The hard-constraint layer (ignored by ``sc``; ``splits`` only by ``moe``).

    ``rows``: ``global`` (every expert fits all initial/boundary rows, the
    paper) or ``local``.  ``initial``: ``rows`` (the initial condition as
    weighted rows, the paper) or ``construction`` (``u = u0 + t/T (B w)``,
    exact for every weight vector).  ``overlap``: per grid axis, how many
    grid points beyond its block each expert also samples (none by default).
    ``blend``: the prediction blends neighbouring experts smoothly across
    those ``overlap`` points (a partition of unity) instead of switching at
    the seam; off by default (the paper).
    ``global_steps`` (``moe`` only): the first that many training steps tie
    the experts to one weight vector, i.e. solve one global problem over all
    of their points (``n_points`` times the number of experts, the same rows
    and weights) as PI-HC does; the experts then train on from the basis
    that phase leaves.  0 (default): experts from the first step, the paper.
    ``damping``: the solver's initial Marquardt parameter, relative to the
    diagonal of ``J^T J`` (see :class:`~pihc.constraint.HardConstraint`);
    the default 1e-10 starts with Gauss-Newton steps.
    """

    splits: tuple[int, ...] = (1, 4)
    global_steps: int = 0
    overlap: tuple[int, ...] | None = None
    blend: bool = False
    n_points: int = 20000
    rows: str = "global"
    initial: str = "rows"
    pde_weight: float = 1.0
    initial_weight: float = 1.0
    boundary_weight: float = 1.0
    ridge: float = 1e-4
    max_steps: int = 100
    rtol: float = 1e-6
    atol: float = 1e-10
    damping: float = 1e-10


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the training loss on the full grid.

    ``coarsen``: per grid axis (t, x), the factors by which the prediction is
    restricted (:meth:`~pihc.grid.Grid.restrict`: every k-th time, cell
    averages in x) before the loss is evaluated; the model and its hard
    constraint stay on the full grid.  Unset: the loss is on the model's grid.
    """

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0
    coarsen: tuple[int, ...] | None = None


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with gradient clipping; lr halves every ``decay_every`` steps to ``min_lr``.

    ``warmup`` > 0 ramps the rate linearly from 0 to ``lr`` over that many
    steps first (the decay then counts from the end of the ramp).
    """

    lr: float = 1e-3
    decay_every: int = 800
    decay_rate: float = 0.5
    min_lr: float = 1e-4
    clip: float = 1.0
    batch: int = 6
    steps: int = 4000
    warmup: int = 0


@dataclasses.dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    checkpoint_every: int = 200


@dataclasses.dataclass(frozen=True)
class Config:
    problem: str = "diffusion-sorption"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    constraint: ConstraintConfig = ConstraintConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(inner, v, where) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot ("3e-3") as strings.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, d: dict, where: str = "config"):
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in d.items()}
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = to_dict(v) if dataclasses.is_dataclass(v) else (list(v) if isinstance(v, tuple) else v)
    return out


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    import copy

    d = copy.deepcopy(d)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw)
    return d


def builtin_configs() -> list[str]:
    """Names of the configs shipped with pihc, e.g. ``diffusion-sorption/moe-small``."""
    from importlib.resources import files

    root = files("pihc") / "configs"
    return sorted(f"{d.name}/{f.name[:-5]}" for d in root.iterdir() if d.is_dir()
                  for f in d.iterdir() if f.name.endswith(".yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A config file path, or the name of a built-in config (see :func:`builtin_configs`)."""
    from importlib.resources import files

    p = Path(path)
    if p.is_file():
        return p
    name = str(path).removesuffix(".yaml").removeprefix("configs/")
    builtin = files("pihc") / "configs" / f"{name}.yaml"
    if builtin.is_file():
        return Path(str(builtin))
    raise ConfigError(f"config {path} is neither a file nor a built-in config;"
                      f" built-in: {', '.join(builtin_configs())}")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    d: dict[str, Any] = {}
    if path is not None:
        p = resolve_config_path(path)
        d = yaml.safe_load(p.read_text()) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    d = apply_overrides(d, list(overrides))
    cfg = from_dict(Config, d)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Checks that need no data or compute (the rest happens when the model is built)."""
    if cfg.model.method not in ("sc", "hc", "moe"):
        raise ConfigError(f"model.method must be 'sc', 'hc' or 'moe', got {cfg.model.method!r}")
    if cfg.constraint.rows not in ("global", "local"):
        raise ConfigError(f"constraint.rows must be 'global' or 'local', got {cfg.constraint.rows!r}")
    if cfg.constraint.initial not in ("rows", "construction"):
        raise ConfigError(f"constraint.initial must be 'rows' or 'construction', got {cfg.constraint.initial!r}")
    for name, v in [("optim.batch", cfg.optim.batch), ("optim.steps", cfg.optim.steps),
                    ("run.checkpoint_every", cfg.run.checkpoint_every),
                    ("model.n_basis", cfg.model.n_basis), ("model.width", cfg.model.width),
                    ("model.layers", cfg.model.layers), ("constraint.n_points", cfg.constraint.n_points)]:
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    if not 0 <= cfg.constraint.global_steps <= cfg.optim.steps:
        raise ConfigError(f"constraint.global_steps must be in [0, optim.steps = {cfg.optim.steps}],"
                          f" got {cfg.constraint.global_steps}")
    if cfg.constraint.global_steps and cfg.model.method != "moe":
        raise ConfigError(f"constraint.global_steps ties experts together; method {cfg.model.method!r} has"
                          " none (use model.method=moe or leave it at 0)")
    if cfg.optim.warmup < 0:
        raise ConfigError(f"optim.warmup must be >= 0, got {cfg.optim.warmup}")
    if len(cfg.model.modes) != 2 or len(cfg.model.padding) != 2:
        raise ConfigError("model.modes and model.padding need one entry per grid axis (t, x)")
    if cfg.loss.coarsen is not None and (len(cfg.loss.coarsen) != 2 or min(cfg.loss.coarsen) < 1):
        raise ConfigError(f"loss.coarsen needs one factor >= 1 per grid axis (t, x), got {list(cfg.loss.coarsen)}")
    if cfg.data.test_samples < 1:
        raise ConfigError("data.test_samples must be >= 1")


def save_config(cfg: Config, path: Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
