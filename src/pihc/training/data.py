"""The dataset of a run: opening (or generating) it, the train/test split, fields on the model grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..grid import Grid
from ..pdes.base import PDE
from .config import Config, ConfigError
from .problems import get_problem


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
