"""Registry of problems the harness knows: how to open, generate and grid their data.

A problem is looked up by the config's ``problem`` key; the core (PDEs,
solver, experts) never sees these names.  Register your own with
:func:`register_problem`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..grid import Grid
from .config import ConfigError, GeneratorConfig


@dataclasses.dataclass(frozen=True)
class Problem:
    """How the harness handles one problem's data.

    Attributes:
        open: ``path -> dataset`` with ``.pde``, ``.grid``, ``.samples`` and ``.load(indices)``.
        generate: ``(path, GeneratorConfig, progress=bool) -> path``: writes the dataset file
            (atomically), showing a progress bar if ``progress``.
        grid: ``(nt, nx) -> Grid``: the model grid of a config.
        solve: optional ``(u0 (n, *space), pde, grid) -> (n, *grid)``, the
            numerical solver (timed by the evaluation against inference).
    """

    open: Callable[[Path], Any]
    generate: Callable[[Path, GeneratorConfig], Path]
    grid: Callable[[int, int], Grid]
    solve: Callable | None = None


def _ds_open(path):
    from ..data.hdf5 import open_dataset

    return open_dataset(path)


def _ds_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.diffusion_sorption import generate_diffusion_sorption

    return generate_diffusion_sorption(path, samples=g.samples, nx=g.nx, nt=g.nt, seed=g.seed, ic=g.ic,
                                       progress=progress)


def _ds_solve(u0, pde, grid):
    from ..data.diffusion_sorption import solve_as_generated

    return solve_as_generated(u0, pde, grid)


def _ds_grid(nt, nx):
    from ..pdes.diffusion_sorption import diffusion_sorption_grid

    return diffusion_sorption_grid(nt, nx)


def _ns_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.navier_stokes import generate_navier_stokes

    extra = {k: getattr(g, k) for k in ("ny", "t_end", "viscosity", "solve_nx") if getattr(g, k) is not None}
    return generate_navier_stokes(path, samples=g.samples, nx=g.nx, nt=g.nt, seed=g.seed, progress=progress,
                                  **extra)


def _ns_solve(u0, pde, grid):
    from ..data.navier_stokes import solve_navier_stokes

    return solve_navier_stokes(u0, pde, nt=grid.shape[0], t_end=grid.axes[0].hi)


def _ns_grid(nt, nx):
    from ..pdes.navier_stokes import navier_stokes_grid

    return navier_stokes_grid(nt, nx, nx, 5.0)


_PROBLEMS: dict[str, Problem] = {
    "diffusion-sorption": Problem(open=_ds_open, generate=_ds_generate, grid=_ds_grid,
                                  solve=_ds_solve),
    "navier-stokes": Problem(open=_ds_open, generate=_ns_generate, grid=_ns_grid, solve=_ns_solve),
}


def register_problem(name: str, problem: Problem) -> None:
    """Make ``problem`` available to configs as ``problem: name``."""
    _PROBLEMS[name] = problem


def get_problem(name: str) -> Problem:
    try:
        return _PROBLEMS[name]
    except KeyError:
        raise ConfigError(f"unknown problem {name!r}; known: {sorted(_PROBLEMS)}") from None
