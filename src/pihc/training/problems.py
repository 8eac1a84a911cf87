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
        grid: ``shape -> Grid``: the model grid of a config, ``shape`` one size per axis (t first).
        solve: optional ``(u0 (n, *space), pde, grid) -> (n, *grid)``, the
            numerical solver (timed by the evaluation against inference).
    """

    open: Callable[[Path], Any]
    generate: Callable[[Path, GeneratorConfig], Path]
    grid: Callable[[tuple[int, ...]], Grid]
    solve: Callable | None = None


def _ds_open(path):
    from ..data.hdf5 import open_dataset

    return open_dataset(path)


def _ds_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.diffusion_sorption import generate_diffusion_sorption

    unused = [k for k in ("ny", "solve_nx") if getattr(g, k) is not None] + (["constants"] if g.constants else [])
    if unused:  # a setting that would be silently ignored
        raise ValueError(f"{', '.join(unused)}: not settings of the diffusion-sorption generator (it takes"
                         " samples, nx, nt, seed and ic); remove them")

    return generate_diffusion_sorption(path, samples=g.samples, nx=g.nx, nt=g.nt, seed=g.seed, ic=g.ic,
                                       progress=progress)


def _ds_solve(u0, pde, grid):
    from ..data.diffusion_sorption import solve_as_generated

    return solve_as_generated(u0, pde, grid)


def _ds_grid(shape):
    from ..pdes.diffusion_sorption import diffusion_sorption_grid

    return diffusion_sorption_grid(*shape)


def _ns_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.navier_stokes import generate_navier_stokes

    unknown = sorted(set(g.constants) - {"viscosity"})
    if unknown:
        raise ValueError(f"constants {unknown} are not the Navier-Stokes generator's; it takes viscosity")
    if g.ic != "grf":
        raise ValueError(f"ic {g.ic!r}: the Navier-Stokes generator draws its initial vorticity from the"
                         " periodic Gaussian random field only; set ic: grf")
    return generate_navier_stokes(path, samples=g.samples, nx=g.nx, ny=g.ny, nt=g.nt, seed=g.seed,
                                  solve_nx=g.solve_nx, progress=progress, **g.constants)


def _ns_solve(u0, pde, grid):
    from ..data.navier_stokes import solve_navier_stokes

    t = grid.axes[0]
    return solve_navier_stokes(u0, pde, nt=t.n, t_end=t.hi - t.lo)


def _ns_grid(shape):
    from ..grid import GridError
    from ..pdes.navier_stokes import navier_stokes_grid

    if len(shape) != 3:
        raise GridError(f"Navier-Stokes lives on a (t, x, y) grid; the config gives {len(shape)} sizes"
                        f" {tuple(shape)}: set data.ny")
    nt, nx, ny = shape
    if nx != ny:
        # The generator's initial conditions and the paper's problem live on the square with the
        # same resolution in x and y; the data files are square.
        raise GridError(f"Navier-Stokes needs as many points along y as along x (the unit square's"
                        f" data are square); the config has nx = {nx}, ny = {ny}: set data.ny = data.nx")
    return navier_stokes_grid(nt, nx, ny)


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
