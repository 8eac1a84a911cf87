"""The dataset of a run: opening (or generating) it, the train/test split, fields on the model grid.

Two kinds of problem (:mod:`pihc.training.problems`):

* a registered problem with a data file (diffusion-sorption): the file holds
  ``data.generate.samples`` trajectories; the first ``train_samples`` give
  the training initial conditions, the last ``test_samples`` are held out.
  The file is generated when missing.
* a :class:`pihc.Problem`: sample ``i`` is its initial condition of seed
  ``data.generate.seed + i``, ``i < data.generate.samples``; the first
  ``train_samples`` are sampled for training (no solution is needed), the last
  ``test_samples`` are held out and their reference solutions, on the grid
  ``data.generate.(nt, nx)`` (default: the model grid), are the file ``data.path``, made by the problem's
  solver when first needed for scoring.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.hdf5 import DataError
from ..files import check_writable
from ..grid import Grid, GridError
from ..pdes.base import PDE
from .config import Config, ConfigError
from .problems import problem_of


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything the trainer and evaluator need from the dataset.

    ``train_idx``: the training samples (rows of the data file, or for a
    sampled problem, offsets of their seeds from ``data.generate.seed``);
    ``test_idx``: the held-out samples' rows of the data file.
    ``grid`` is the model's grid; ``full_grid`` the config's whole grid when
    the model trains on a window of it (``data.train_until``), else None.
    """

    pde: PDE
    grid: Grid
    data_grid: Grid
    path: str
    train_idx: np.ndarray
    test_idx: np.ndarray
    full_grid: Grid | None = None

    @property
    def whole_grid(self) -> Grid:
        """The config's whole grid (the data are restricted to it)."""
        return self.grid if self.full_grid is None else self.full_grid


def model_grids(cfg: Config) -> tuple[Grid, Grid | None]:
    """``(grid, full_grid)`` of :class:`PreparedData` for ``cfg``: the model grid, cut to the
    training window ``data.train_until`` on its first (time) axis, and the whole grid if it was cut.
    Raises ConfigError if the window does not fit the grid."""
    whole = problem_of(cfg).grid(cfg.data.shape)
    if cfg.data.train_until is None:
        return whole, None
    try:
        return whole.until(whole.names[0], cfg.data.train_until), whole
    except GridError as err:
        raise ConfigError(f"data.train_until = {cfg.data.train_until}: {err}") from None


def _generated_shape(g) -> tuple[int, ...]:
    """The grid shape a generator config ``g`` (``cfg.data.generator()``) makes data on."""
    return (g.nt, g.nx) + (() if g.ny is None else (g.ny,))


def _generated_grid(cfg: Config) -> Grid:
    """The grid ``data.generate`` makes data on."""
    return problem_of(cfg).grid(_generated_shape(cfg.data.generator()))


def _generate(cfg: Config, path: Path, g, log, progress: bool) -> None:
    problem = problem_of(cfg)

    def checked(run):
        try:
            return run()
        except ValueError as err:  # the generator's own checks (e.g. an unknown ic)
            if isinstance(err, GridError) or type(err).__name__ == "DataError":
                raise
            raise ConfigError(f"data.generate: {err}") from None

    if problem.check is not None:  # before saying it generates
        checked(lambda: problem.check(g))
    check_writable(path, "data.path")
    shape = _generated_shape(g)
    log(f"data file {path} not found: generating it ({g.samples} samples at {' x '.join(map(str, shape))},"
        f" seed {g.seed}" + (f", ic {g.ic!r})" if problem.initial is None else ")"))
    checked(lambda: problem.generate(path, g, progress=progress))


def _split_sizes(cfg: Config, n: int, what: str) -> tuple[int, int]:
    n_test = cfg.data.test_samples
    n_train = cfg.data.train_samples if cfg.data.train_samples is not None else n - n_test
    if n_test + n_train > n:
        raise ConfigError(f"{what} has {n} samples; {n_train} train + {n_test} test requested: lower"
                          " data.train_samples or data.test_samples, or give more samples")
    if n_train < 1:
        raise ConfigError(f"{what} has {n} samples and data.test_samples holds out {n_test}: none is left to"
                          " train on; lower data.test_samples or raise the number of samples")
    return n_train, n_test


def prepare_data(cfg: Config, log: Callable[[str], None] = print, progress: bool = True, *,
                 path: str | Path | None = None, generate: bool = True) -> PreparedData:
    """Open (or generate, when missing) the configured dataset and split it.

    A sampled problem (a :class:`pihc.Problem`) needs no file here: its
    reference file is opened if it exists (and checked against the grid),
    else made when first scored (:func:`load_fields`).

    ``progress``: show the generator's progress bar (``Problem.generate``'s keyword).
    ``path``: the file, in place of ``data.path`` (a trained run's, :func:`run_data_path`).
    ``generate=False``: a missing file is not made here but when first read
    (:func:`load_fields`), as a sampled problem's reference is; until then the
    data are described by ``data.generate``, whose PDE the config must name
    (else the file is made now: only it can tell).  Scoring a trained run on
    another file then never makes the run's own."""
    problem = problem_of(cfg)
    path = Path(cfg.data.path if path is None else path)
    if path.is_dir():
        raise ConfigError(f"data.path {path} is a directory; give the dataset file")
    grid, full_grid = model_grids(cfg)
    whole = full_grid or grid
    if problem.initial is not None:
        g = cfg.data.generator()
        n_train, n_test = _split_sizes(cfg, g.samples, "data.generate.samples")
        if path.exists():
            ds = problem.open(path)
            data_grid = ds.grid
            test_idx = np.arange(len(ds.samples) - min(n_test, len(ds.samples)), len(ds.samples))
        else:
            data_grid = _generated_grid(cfg)
            test_idx = np.arange(n_test)
        data_grid.factors_to(whole)  # raises a GridError naming the axis if not an integer multiple
        return PreparedData(configured_pde(problem.source.pde, cfg.pde), grid, data_grid, str(path),
                            np.arange(n_train), test_idx, full_grid)
    want = generated_pde(cfg)  # the config's pde options checked; None where only the data tell the PDE
    if not path.exists():
        # What the data will be, checked before they are made: a grid that the model grid divides,
        # enough samples for the split.
        g = cfg.data.generator()
        data_grid = _generated_grid(cfg)
        try:
            data_grid.factors_to(whole)
        except GridError as err:
            raise GridError(f"data.generate makes data on {' x '.join(map(str, data_grid.shape))}: {err}") from None
        n_train, n_test = _split_sizes(cfg, g.samples, "data.generate.samples")
        if not generate and want is not None:
            return PreparedData(want, grid, data_grid, str(path), np.arange(n_train),
                                np.arange(g.samples - n_test, g.samples), full_grid)
        _generate(cfg, path, g, log, progress)
    ds = problem.open(path)
    if want is not None and type(ds.pde) is not type(want):
        raise DataError(f"{path} holds {type(ds.pde).__name__} data; the config's problem {cfg.problem!r} trains on"
                        f" {type(want).__name__}: give a file of it (`pihc data info FILE` names a file's PDE)")
    check_constants(ds.pde, cfg.data.generate.constants, path)
    ds.grid.factors_to(whole)  # raises a GridError naming the axis if not an integer multiple
    n = len(ds.samples)
    n_train, n_test = _split_sizes(cfg, n, str(path))
    test_idx = np.arange(n - n_test, n)
    train_idx = np.arange(0, n_train)
    return PreparedData(configured_pde(ds.pde, cfg.pde), grid, ds.grid, str(path), train_idx, test_idx, full_grid)


def generated_pde(cfg: Config) -> PDE | None:
    """The PDE, with the config's ``pde`` options, that ``cfg.data.generate`` will make data of:
    known before the data exist (None where only the data can tell, or where the generator will
    refuse the constants, in its own words, when it runs). Raises ConfigError for a bad option."""
    problem = problem_of(cfg)
    if problem.pde is None or problem.initial is not None:
        return None
    try:
        pde = problem.pde(dict(cfg.data.generate.constants))
    except (TypeError, ValueError):
        return None
    return configured_pde(pde, cfg.pde)


def configured_pde(pde: PDE, options: dict) -> PDE:
    """``pde`` with the config's discretisation options (``cfg.pde``) set.

    Only static fields (a stencil, an order, a residual's form) may be set:
    the others are physical constants, which belong to the data.  Raises a
    ConfigError naming the option for an unknown field, a constant, or a
    value the PDE refuses.
    """
    if not options:
        return pde
    fields = {f.name: f for f in dataclasses.fields(pde)}
    name = type(pde).__name__
    options_of = sorted(n for n, f in fields.items() if f.metadata.get("static", False))
    for key in options:
        if key not in fields:
            raise ConfigError(f"pde.{key}: {name} has no such option; its options are {options_of}")
        if not fields[key].metadata.get("static", False):
            raise ConfigError(f"pde.{key} is a physical constant of {name}, which comes with the data; set"
                              f" data.generate.constants.{key} and give data made with it (pde sets only the"
                              f" options {options_of})")
    hints = typing.get_type_hints(type(pde))
    for key, value in options.items():
        tp = hints.get(key)
        if typing.get_origin(tp) is typing.Literal and value not in typing.get_args(tp):
            raise ConfigError(f"pde.{key} must be one of {', '.join(map(repr, typing.get_args(tp)))}; got {value!r}")
        if tp in (bool, int) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
            raise ConfigError(f"pde.{key} must be {'true or false' if tp is bool else 'an integer'}; got {value!r}")
    try:
        return dataclasses.replace(pde, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"pde: {str(err).splitlines()[0]}") from None


def mismatched_constant(pde: PDE, constants: dict) -> tuple[str, typing.Any, float] | None:
    """``(name, the PDE's value, the asked value)`` of the first of ``constants`` the PDE holds with
    another value, to a relative 1e-9 (files may store constants rounded); None if all agree.
    A name that is not a field of the PDE is the caller's to refuse."""
    for name, want in constants.items():
        have = np.asarray(getattr(pde, name), np.float64)
        if have.shape != () or not np.isclose(float(have), float(want), rtol=1e-9, atol=0.0):
            return name, have.tolist(), float(want)
    return None


def check_constants(pde: PDE, constants: dict, path) -> None:
    """Raise ConfigError unless the data's PDE has the constants the config names
    (``data.generate.constants``)."""
    fields = [f.name for f in dataclasses.fields(pde)]
    for name in constants:
        if name not in fields:
            raise ConfigError(f"data.generate.constants.{name}: the data's PDE ({type(pde).__name__}) has no"
                              f" constant {name!r}; its fields are {fields}")
    bad = mismatched_constant(pde, constants)
    if bad is not None:
        name, have, want = bad
        raise ConfigError(f"{path} holds data with {name} = {have}, but the config asks for"
                          f" {want:g} (data.generate.constants.{name}); give data made with {name} = {want:g}"
                          f" (another data.path, generated when missing) or set the config to the data's value")


def ensure_reference(cfg: Config, data: PreparedData, log: Callable[[str], None] = print,
                     progress: bool = True) -> None:
    """Make the data file if it is missing: a sampled problem's reference (its held-out samples,
    solved), or the dataset that ``prepare_data(..., generate=False)`` described."""
    problem = problem_of(cfg)
    path = Path(data.path)
    if path.exists():
        return
    if problem.initial is None:
        prepare_data(cfg, log, progress, path=path)  # generated from data.generate, checked against the config
        return
    g = cfg.data.generator()
    n_train, n_test = _split_sizes(cfg, g.samples, "data.generate.samples")
    held_out = dataclasses.replace(g, samples=n_test, seed=g.seed + g.samples - n_test)
    _generate(cfg, path, held_out, log, progress)


def has_reference(cfg: Config, data: PreparedData) -> bool:
    """Whether the held-out samples can be scored: the file exists or the problem can solve them."""
    problem = problem_of(cfg)
    return Path(data.path).exists() or problem.initial is None or problem.solve is not None


def load_fields(cfg: Config, data: PreparedData, indices, log: Callable[[str], None] = print) -> np.ndarray:
    """Solutions of the given samples (rows of the data file) restricted to the model grid: (n, *grid)
    (the first times of the whole grid when the model's grid is a training window).

    A sampled problem's reference file is made first if it is missing."""
    ensure_reference(cfg, data, log)
    ds = problem_of(cfg).open(Path(data.path))
    u = ds.load(np.asarray(indices))
    factors = ds.grid.factors_to(data.whole_grid)
    return np.stack([ds.grid.restrict(v, factors)[:data.grid.shape[0]] for v in u])


def load_initial(cfg: Config, data: PreparedData, indices) -> np.ndarray:
    """Initial conditions of the given training samples on the model grid: (n, *space).

    A sampled problem draws them (seeds ``data.generate.seed + indices``);
    no solution is read or computed."""
    problem = problem_of(cfg)
    if problem.initial is not None:
        return problem.initial(cfg.data.generate.seed + np.asarray(indices), data.grid)
    return load_fields(cfg, data, indices)[:, 0]
