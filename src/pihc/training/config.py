"""One source of configuration: frozen dataclasses, loaded from YAML.

Unknown keys are errors; ``--set a.b=value`` overrides parse ``value`` as
YAML.  The resolved config is saved beside every run (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from ..constraint import ExpertLoop, HardConstraint, RowScope, Start
from ..experts import RowWeights
from ..least_squares import LevenbergMarquardt
from ..linearise import InitialCondition
from ..models.methods import Features
from ..sharding import MeshError, check_mesh


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """How to make the dataset when its file is missing (``pihc generate``).

    ``nt``, ``nx``, ``ny``: the grid the data are made on, a multiple of the
    model's (``data.nt``, ``data.nx``, ``data.ny``; unset: the model's grid).
    ``ic``: the initial-condition family of a registered problem's generator
    (diffusion-sorption: ``pdebench`` or ``smooth``; Navier-Stokes: ``grf``;
    a :class:`pihc.Problem` samples its own).  ``solve_nx``: the generator's
    own solve grid (Navier-Stokes; unset: its default).  ``constants``: the
    PDE's physical constants, by field name (e.g. ``{viscosity: 1.0e-4}``);
    the generator uses them, and a data file that exists must carry the same
    values, or the run is refused before any compute.  Unset: the problem's
    defaults, and no check.
    """

    samples: int = 1000
    nx: int | None = None
    nt: int | None = None
    seed: int = 0
    ic: str = "pdebench"
    ny: int | None = None
    solve_nx: int | None = None
    constants: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The dataset and the model's grid.

    ``path`` is relative to the working directory.  ``ny``: points along y,
    for a problem on a (t, x, y) grid (unset: a (t, x) grid).  Data on a
    finer grid that is an integer multiple of ``(nt, nx[, ny])`` is subsampled.  The last
    ``test_samples`` samples are held out (PDEBench's file: seeds 9000-9999).

    ``train_until``: train on the times ``t <= train_until`` of the grid only
    (temporal extrapolation: the model and its constraint live on that
    window while training; ``pihc evaluate`` runs it on the whole grid and
    scores the times after the window separately).  Unset: the whole grid.
    """

    path: str = "data/diffusion-sorption.h5"
    generate: GeneratorConfig = GeneratorConfig()
    nt: int = 101
    nx: int = 1024
    train_samples: int | None = None
    test_samples: int = 100
    train_until: float | None = None
    ny: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The model grid's points per axis, time first (what ``Problem.grid`` is given)."""
        return (self.nt, self.nx) if self.ny is None else (self.nt, self.nx, self.ny)

    def generator(self) -> GeneratorConfig:
        """``generate`` with its grid resolved: unset sizes are the model grid's, and an unset ``ny``
        keeps the model grid's aspect ratio (``nx * data.ny / data.nx``)."""
        g = self.generate
        nx = self.nx if g.nx is None else g.nx
        ny = g.ny if g.ny is not None or self.ny is None else nx * self.ny // self.nx
        return dataclasses.replace(g, nt=self.nt if g.nt is None else g.nt, nx=nx, ny=ny)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone and method: ``method`` is ``sc``, ``hc`` or ``moe``.

    ``init_from``: a trained run directory whose backbone starts this run
    (fine-tuning, or coarse-to-fine training: the FNO sees coordinates scaled
    to [0, 1] and keeps a fixed number of modes, so its weights apply on any
    grid).  Width, modes, layers and the number of outputs must match; the
    optimiser state starts afresh.

    ``features``: the backbone's inputs.  ``initial``: the coordinates and
    ``u0``; ``tendency`` adds the PDE's residual at ``u0`` held constant in
    time and the explicit Euler step from ``u0``; ``taylor`` adds to those
    the second time derivative at ``u0`` and the second-order Taylor step
    (:func:`pihc.models.input_features`).
    """

    method: str = "moe"
    width: int = 64
    modes: tuple[int, ...] = (8, 8)
    layers: int = 5
    n_basis: int = 16
    padding: tuple[int, ...] = (0, 0)
    init_from: str | None = None
    dtype: typing.Literal["float32", "float64"] = "float32"
    features: Features = "initial"


def _layer_default(name: str):
    """The default of :class:`~pihc.constraint.HardConstraint`'s field ``name``: one source of truth."""
    (field,) = [f for f in dataclasses.fields(HardConstraint) if f.name == name]
    return dataclasses.field(default=field.default)


@dataclasses.dataclass(frozen=True)
class ConstraintConfig:
    """The hard-constraint layer (ignored by ``sc``; ``splits`` only by ``moe``).

    Every key but ``global_steps`` is the :class:`~pihc.constraint.HardConstraint`
    argument of the same name, with the same type and default (a test checks
    this): ``row_weights`` is a :class:`~pihc.experts.RowWeights` (``pde``,
    ``initial``, ``boundary``, ``ridge``) and ``solver`` a
    :class:`~pihc.least_squares.LevenbergMarquardt` (``max_steps``, ``rtol``,
    ``atol``, ``damping``); their own checks validate them when the config is
    loaded, and the layer's when the model is built.

    ``global_steps`` (``moe`` only): the first that many training steps tie
    the experts to one weight vector, i.e. solve one global problem over all
    of their points as PI-HC does (:meth:`~pihc.constraint.HardConstraint.tied`);
    0 (default): experts from the first step, the paper.
    """

    splits: tuple[int, ...] = (1, 4)
    n_points: int = 20000
    row_scope: RowScope = _layer_default("row_scope")
    row_weights: RowWeights = _layer_default("row_weights")
    solver: LevenbergMarquardt = _layer_default("solver")
    start: Start = _layer_default("start")
    initial_condition: InitialCondition = _layer_default("initial_condition")
    overlap: tuple[int, ...] | None = _layer_default("overlap")
    blend: bool = _layer_default("blend")
    expert_loop: ExpertLoop = _layer_default("expert_loop")
    time_slabs: int = _layer_default("time_slabs")
    global_steps: int = 0

    def layer_options(self) -> dict:
        """The :class:`~pihc.constraint.HardConstraint` keyword arguments (all keys but ``global_steps``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "global_steps"}


# Keys of earlier versions' constraint sections, for a message that names the new key.
_RENAMED = {"rows": "row_scope", "initial": "initial_condition", "init": "start",
            "pde_weight": "row_weights.pde", "initial_weight": "row_weights.initial",
            "boundary_weight": "row_weights.boundary", "ridge": "row_weights.ridge",
            "max_steps": "solver.max_steps", "rtol": "solver.rtol", "atol": "solver.atol",
            "damping": "solver.damping"}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights of the training loss on the full grid.

    ``coarsen``: per grid axis (t, x), the factors by which the prediction is
    restricted (:meth:`~pihc.grid.Grid.restrict`: every k-th time, cell
    averages in x) before the loss is evaluated; the model and its hard
    constraint stay on the full grid.  Unset: the loss is on the model's grid.

    ``causal``: epsilon of the causal weighting of the PDE residual's time
    levels (:class:`pihc.LossWeights`); 0 (default) is the plain mean square.
    """

    pde: float = 1.0
    initial: float = 1.0
    boundary: float = 1.0
    coarsen: tuple[int, ...] | None = None
    causal: float = 0.0


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
    """Seed and bookkeeping.

    ``eval_every`` > 0: every that many steps, the relative L2 error of the
    model on the first ``eval_samples`` held-out samples is logged in
    ``metrics.jsonl`` (``heldout_rel_l2``) and drawn beside the loss.  It reads
    the reference solutions (made by the problem's solver when missing) and
    never enters training; 0 (default): none.
    """

    seed: int = 0
    checkpoint_every: int = 200
    eval_every: int = 0
    eval_samples: int = 4


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The devices a run trains on (:mod:`pihc.sharding`): a ``batch x expert`` mesh.

    ``batch`` devices split each step's samples (it must divide
    ``optim.batch``); ``expert`` devices split the constraint's experts (it
    must divide their number).  Default: one device.  It is not part of
    what a checkpoint must match: a run resumes on any mesh
    (``pihc train --resume RUN --devices auto``).
    """

    batch: int = 1
    expert: int = 1


@dataclasses.dataclass(frozen=True)
class Config:
    """A run's configuration.

    ``problem``: a registered problem (``diffusion-sorption``) or a
    :class:`pihc.Problem` as ``"module.path:Attribute"``, importable from the
    working directory; ``problem_options``: that class's fields (its
    constructor's keyword arguments, e.g. ``{viscosity: 0.01}``).
    ``pde``: the PDE's discretisation options, its static fields (e.g.
    ``{time_stencil: backward, time_accuracy: 2}``), set on the PDE the data
    come with; its physical constants come from the data
    (``data.generate.constants``).
    """

    problem: str = "diffusion-sorption"
    problem_options: dict = dataclasses.field(default_factory=dict)
    pde: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    constraint: ConstraintConfig = ConstraintConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    mesh: MeshConfig = MeshConfig()


def n_experts(cfg: Config) -> int:
    """How many expert solves each sample's constraint has (1 for PI-HC and, with none, PI-SC)."""
    return math.prod(cfg.constraint.splits) if cfg.model.method == "moe" else 1


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
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
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    kinds = {bool: "true or false", int: "an integer", str: "a string"}
    if tp in kinds:
        # A bool is an int in Python: an integer field refuses true/false.
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {kinds[tp]}, got {value!r}")
        return value
    return value


def from_dict(cls, d: dict, where: str = "config"):
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        renamed = [f"{k} is now {where.split('.')[-1]}.{_RENAMED[k]}" for k in sorted(unknown)
                   if cls is ConstraintConfig and k in _RENAMED]
        hint = f" ({'; '.join(renamed)})" if renamed else ""
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}{hint}; valid keys are {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:  # the type's own checks (e.g. LevenbergMarquardt's)
        raise ConfigError(f"{where}: {err}") from None


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
        if not all(parts):
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_yaml_problem(err)});"
                              " quote a string value") from None
    return d


def _yaml_problem(err: Exception) -> str:
    """A YAML error in one line: what is wrong and where."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


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
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p} is not valid YAML: {_yaml_problem(err)}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{p} cannot be read as a YAML config ({err}); give a config file") from None
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
    for name, v in [("optim.batch", cfg.optim.batch), ("optim.steps", cfg.optim.steps),
                    ("run.checkpoint_every", cfg.run.checkpoint_every),
                    ("model.n_basis", cfg.model.n_basis), ("model.width", cfg.model.width),
                    ("model.layers", cfg.model.layers)]:
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
    axes = "(t, x)" if cfg.data.ny is None else "(t, x, y)"
    ndim = len(cfg.data.shape)
    for name, v in (("model.modes", cfg.model.modes), ("model.padding", cfg.model.padding)):
        if len(v) != ndim:
            raise ConfigError(f"{name} {list(v)} needs one entry per grid axis {axes}"
                              + ("" if cfg.data.ny is not None or len(v) != 3 else
                                 "; for a (t, x, y) grid set data.ny"))
    if cfg.model.method == "moe" and len(cfg.constraint.splits) != ndim:
        raise ConfigError(f"constraint.splits {list(cfg.constraint.splits)} needs one count per grid axis {axes}"
                          + ("" if cfg.data.ny is not None or len(cfg.constraint.splits) != 3 else
                             "; for a (t, x, y) grid set data.ny"))
    if cfg.constraint.overlap is not None and len(cfg.constraint.overlap) != ndim:
        raise ConfigError(f"constraint.overlap {list(cfg.constraint.overlap)} needs one entry per grid axis {axes}")
    if cfg.loss.coarsen is not None and (len(cfg.loss.coarsen) != ndim or min(cfg.loss.coarsen) < 1):
        raise ConfigError(f"loss.coarsen needs one factor >= 1 per grid axis {axes}, got {list(cfg.loss.coarsen)}")
    for name, v in cfg.data.generate.constants.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"data.generate.constants.{name} must be a finite number, got {v!r}")
    if cfg.data.train_until is not None and not cfg.data.train_until > 0:
        raise ConfigError(f"data.train_until must be > 0 (the end of the training window), got"
                          f" {cfg.data.train_until}")
    if cfg.data.test_samples < 1:
        raise ConfigError(f"data.test_samples must be >= 1, got {cfg.data.test_samples}")
    if cfg.data.train_samples is not None and cfg.data.train_samples < 1:
        raise ConfigError(f"data.train_samples must be >= 1 (or unset: every sample not held out), got"
                          f" {cfg.data.train_samples}")
    g = cfg.data.generator()
    for name, v, lo in [("data.nt", cfg.data.nt, 2), ("data.nx", cfg.data.nx, 2),
                        ("data.ny", 2 if cfg.data.ny is None else cfg.data.ny, 2),
                        ("data.generate.ny", 2 if g.ny is None else g.ny, 2),
                        ("data.generate.solve_nx", 1 if g.solve_nx is None else g.solve_nx, 1),
                        ("data.generate.samples", g.samples, 1), ("data.generate.nt", g.nt, 2),
                        ("data.generate.nx", g.nx, 2), ("data.generate.seed", g.seed, 0),
                        ("optim.decay_every", cfg.optim.decay_every, 1), ("run.seed", cfg.run.seed, 0),
                        ("constraint.n_points", cfg.constraint.n_points, 1),
                        ("run.eval_every", cfg.run.eval_every, 0), ("run.eval_samples", cfg.run.eval_samples, 1)]:
        if v < lo:
            raise ConfigError(f"{name} must be >= {lo}, got {v}")
    _check_finite(cfg, "config")
    o = cfg.optim
    if not o.lr > 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
    if not 0 <= o.min_lr <= o.lr:
        raise ConfigError(f"optim.min_lr must be in [0, optim.lr = {o.lr}], got {o.min_lr}")
    if not 0 < o.decay_rate <= 1:
        raise ConfigError(f"optim.decay_rate must be in (0, 1], got {o.decay_rate}")
    if not o.clip > 0:
        raise ConfigError(f"optim.clip must be > 0, got {o.clip}")
    for name in ("pde", "initial", "boundary", "causal"):
        if getattr(cfg.loss, name) < 0:
            raise ConfigError(f"loss.{name} must be >= 0, got {getattr(cfg.loss, name)}")
    try:
        for name in ("batch", "expert"):
            if getattr(cfg.mesh, name) < 1:
                raise MeshError(f"mesh.{name} must be >= 1, got {getattr(cfg.mesh, name)}")
        check_mesh(cfg.mesh.batch, cfg.mesh.expert, n_experts(cfg), cfg.optim.batch)
    except MeshError as err:
        raise ConfigError(str(err)) from None


def _check_finite(node, where: str) -> None:
    """Every number in the config is finite (NaN or Inf make no sense as a setting)."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), f"{where}.{f.name}" if where != "config" else f.name)
    elif isinstance(node, tuple):
        for v in node:
            _check_finite(v, where)
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where} must be a finite number, got {node}")


def config_json(cfg: Config) -> dict:
    """``cfg`` as plain JSON values (what a checkpoint records)."""
    import json

    return json.loads(json.dumps(to_dict(cfg)))


def config_changes(old: dict, new: dict, where: str = "") -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every dotted key whose value differs."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{where}{k}.")
        elif a != b:
            out.append((f"{where}{k}", a, b))
    return out


def _merged(defaults: dict, recorded: dict) -> dict:
    """``recorded`` with the keys it lacks taken from ``defaults`` (nested)."""
    out = dict(defaults)
    for k, v in recorded.items():
        out[k] = _merged(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return out


def check_unchanged(cfg: Config, meta: dict, run_dir: Path) -> None:
    """Refuse ``cfg`` (``run_dir``'s ``config.yaml``) unless it is the config recorded in the
    checkpoint metadata ``meta``; the message names every changed key."""
    if "config" not in meta:
        return
    # Keys added to the config since the checkpoint was written read as their defaults; the mesh says
    # where a run computes, not what: a run resumes on any number of devices.
    changes = [c for c in config_changes(_merged(config_json(Config()), meta["config"]), config_json(cfg))
               if not c[0].startswith("mesh.")]
    if changes:
        shown = "; ".join(f"{k}: {a!r} when trained, {b!r} now" for k, a, b in changes[:8])
        more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
        same_backbone = not any(k.startswith("model.") for k, _, _ in changes)
        raise ConfigError(f"{Path(run_dir) / 'config.yaml'} was changed after the run's checkpoint was written"
                          f" ({shown}{more}); restore those keys, or start a new run with the new config"
                          + (f" (--init-from {run_dir} starts from this run's backbone)" if same_backbone else ""))


def save_config(cfg: Config, path: Path) -> None:
    from ..files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
