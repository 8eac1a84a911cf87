"""The dataset of a run: opening (or generating) it, the train/test split, fields on the model grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import check_writable
from ..grid import Grid, GridError
from ..pdes.base import PDE
from .config import Config, ConfigError
from .problems import get_problem


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything the trainer and evaluator need from the dataset.

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
    whole = get_problem(cfg.problem).grid(cfg.data.shape)
    if cfg.data.train_until is None:
        return whole, None
    try:
        return whole.until(whole.names[0], cfg.data.train_until), whole
    except GridError as err:
        raise ConfigError(f"data.train_until = {cfg.data.train_until}: {err}") from None


def prepare_data(cfg: Config, log: Callable[[str], None] = print, progress: bool = True) -> PreparedData:
    """Open (or generate, when missing) the configured dataset and split it.

    ``progress``: show the generator's progress bar (``Problem.generate``'s keyword)."""
    problem = get_problem(cfg.problem)
    path = Path(cfg.data.path)
    if path.is_dir():
        raise ConfigError(f"data.path {path} is a directory; give the dataset file")
    grid, full_grid = model_grids(cfg)  # a grid the problem refuses is refused before any compute
    if not path.exists():
        g = cfg.data.generate
        shape = (g.nt, g.nx) if g.ny is None and cfg.data.ny is None else (g.nt, g.nx, g.nx if g.ny is None else g.ny)
        log(f"data file {path} not found: generating it ({g.samples} samples at {' x '.join(map(str, shape))},"
            f" seed {g.seed}, ic {g.ic!r})")
        check_writable(path, "data.path")
        try:
            problem.generate(path, g, progress=progress)
        except ValueError as err:  # the generator's own checks (e.g. an unknown ic)
            if isinstance(err, GridError) or type(err).__name__ == "DataError":
                raise
            raise ConfigError(f"data.generate: {err}") from None
    ds = problem.open(path)
    check_constants(ds.pde, cfg.data.generate.constants, path)
    ds.grid.factors_to(full_grid or grid)  # raises a GridError naming the axis if not an integer multiple
    n = len(ds.samples)
    n_test = cfg.data.test_samples
    n_train = cfg.data.train_samples if cfg.data.train_samples is not None else n - n_test
    if n_test + n_train > n:
        raise ConfigError(f"{path} has {n} samples; {n_train} train + {n_test} test requested")
    if n_train < 1:
        raise ConfigError(f"{path} has {n} samples and data.test_samples holds out {n_test}: none is left to"
                          " train on; lower data.test_samples or use a larger dataset")
    test_idx = np.arange(n - n_test, n)
    train_idx = np.arange(0, n_train)
    return PreparedData(ds.pde, grid, ds.grid, str(path), train_idx, test_idx, full_grid)


def check_constants(pde: PDE, constants: dict, path) -> None:
    """Raise ConfigError unless the data's PDE has the constants the config names
    (``data.generate.constants``), to a relative 1e-9 (files may store them rounded)."""
    for name, want in constants.items():
        fields = [f.name for f in dataclasses.fields(pde)]
        if name not in fields:
            raise ConfigError(f"data.generate.constants.{name}: the data's PDE ({type(pde).__name__}) has no"
                              f" constant {name!r}; its fields are {fields}")
        have = np.asarray(getattr(pde, name), np.float64)
        if have.shape != () or not np.isclose(float(have), float(want), rtol=1e-9, atol=0.0):
            raise ConfigError(f"{path} holds data with {name} = {have.tolist()}, but the config asks for"
                              f" {want} (data.generate.constants.{name}); give data made with {name} = {want}"
                              f" (another data.path, generated when missing) or set the config to the data's value")


def load_fields(cfg: Config, data: PreparedData, indices) -> np.ndarray:
    """Solutions of the given samples restricted to the model grid: (n, *grid) (the first times
    of the whole grid when the model's grid is a training window)."""
    ds = get_problem(cfg.problem).open(Path(data.path))
    u = ds.load(np.asarray(indices))
    factors = data.data_grid.factors_to(data.whole_grid)
    return np.stack([data.data_grid.restrict(v, factors)[:data.grid.shape[0]] for v in u])


def load_initial(cfg: Config, data: PreparedData, indices) -> np.ndarray:
    """Initial conditions of the given samples on the model grid: (n, *space)."""
    return load_fields(cfg, data, indices)[:, 0]
