"""The problems a config can name: the registered ones and ``"module.path:Attribute"``.

A config's ``problem`` is either the name of a registered problem (the
built-in ``diffusion-sorption``, or one added with :func:`register_problem`)
or an importable :class:`pihc.Problem` (``"examples.burgers:BurgersProblem"``;
the working directory is on the import path), built from the config's
``problem_options``.  The core (PDEs, solver, experts) never sees these names.

The harness handles both through one record, :class:`Problem`: how to open,
generate and grid the problem's data and, for a :class:`pihc.Problem`, how to
sample initial conditions.  A problem with a sampler trains on sampled
initial conditions and needs no data file; its data file holds only the
held-out samples' reference solutions, made by its solver when missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..grid import Grid
from .config import Config, ConfigError, GeneratorConfig


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
        initial: optional ``(seeds, grid) -> (n, *space)``: the initial conditions of
            the given sample seeds.  A problem with one trains without a data file.
        source: the :class:`pihc.Problem` this record was made from (None for a registered one).
        pde: optional ``constants -> PDE``: the PDE whose data ``generate`` writes, given
            ``data.generate.constants``; lets a config's ``pde`` options be checked before
            the data are generated.
        check: optional ``GeneratorConfig -> None``: raises ValueError naming a setting
            ``generate`` would refuse, without any compute (``generate`` checks them too).
    """

    open: Callable[[Path], Any]
    generate: Callable[[Path, GeneratorConfig], Path]
    grid: Callable[[tuple[int, ...]], Grid]
    solve: Callable | None = None
    initial: Callable[[np.ndarray, Grid], np.ndarray] | None = None
    source: Any = None
    pde: Callable[[dict], Any] | None = None
    check: Callable[[GeneratorConfig], None] | None = None


def _ds_open(path):
    from ..data.hdf5 import open_dataset

    return open_dataset(path)


def _ds_check(g: GeneratorConfig) -> None:
    from ..data.diffusion_sorption import check_generate_args

    unused = [k for k in ("ny", "solve_nx") if getattr(g, k) is not None] + (["constants"] if g.constants else [])
    if unused:  # a setting that would be silently ignored
        raise ValueError(f"{', '.join(unused)}: not settings of the diffusion-sorption generator (it takes"
                         " samples, nx, nt, seed and ic); remove them")
    check_generate_args(samples=g.samples, nx=g.nx, nt=g.nt, seed=g.seed, ic=g.ic)


def _ds_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.diffusion_sorption import generate_diffusion_sorption

    _ds_check(g)
    return generate_diffusion_sorption(path, samples=g.samples, nx=g.nx, nt=g.nt, seed=g.seed, ic=g.ic,
                                       progress=progress)


def _ds_solve(u0, pde, grid):
    from ..data.diffusion_sorption import solve_as_generated

    return solve_as_generated(u0, pde, grid)


def _ds_grid(shape):
    from ..pdes.diffusion_sorption import diffusion_sorption_grid

    return diffusion_sorption_grid(*shape)


def _ns_check(g: GeneratorConfig) -> None:
    from ..data.navier_stokes import check_generate_args

    unknown = sorted(set(g.constants) - {"viscosity"})
    if unknown:
        raise ValueError(f"constants {unknown} are not the Navier-Stokes generator's; it takes viscosity")
    if g.ic != "grf":
        raise ValueError(f"ic {g.ic!r}: the Navier-Stokes generator draws its initial vorticity from the"
                         " periodic Gaussian random field only; set ic: grf")
    check_generate_args(samples=g.samples, nx=g.nx, ny=g.nx if g.ny is None else g.ny, nt=g.nt, t_end=None,
                        viscosity=g.constants.get("viscosity"), seed=g.seed, solve_nx=g.solve_nx)


def _ns_generate(path, g: GeneratorConfig, progress: bool = True):
    from ..data.navier_stokes import generate_navier_stokes

    _ns_check(g)
    return generate_navier_stokes(path, samples=g.samples, nx=g.nx, ny=g.ny, nt=g.nt, seed=g.seed,
                                  solve_nx=g.solve_nx, progress=progress, **g.constants)


def _ds_pde(constants):
    from ..pdes.diffusion_sorption import DiffusionSorption

    return DiffusionSorption(**constants)


def _ns_pde(constants):
    from ..pdes.navier_stokes import NavierStokes2D

    return NavierStokes2D(**constants)


def _ns_solve(u0, pde, grid):
    from ..data.navier_stokes import solve_navier_stokes

    t = grid.axes[0]
    return solve_navier_stokes(u0, pde, nt=t.n, t_end=t.hi - t.lo)


def _ns_grid(shape):
    from ..grid import GridError
    from ..pdes.navier_stokes import navier_stokes_grid

    if len(shape) != 3:
        raise GridError(f"Navier-Stokes lives on a (t, x, y) grid; got {len(shape)} sizes {tuple(shape)}: give"
                        " three (data.ny in a config, --grid NT NX NY for `pihc evaluate`)")
    nt, nx, ny = shape
    if nx != ny:
        # The generator's initial conditions and the paper's problem live on the square with the
        # same resolution in x and y; the data files are square.
        raise GridError(f"Navier-Stokes needs as many points along y as along x (the unit square's"
                        f" data are square); got nx = {nx}, ny = {ny}: make them equal (data.ny = data.nx in"
                        " a config, --grid NT N N for `pihc evaluate`)")
    return navier_stokes_grid(nt, nx, ny)


_PROBLEMS: dict[str, Problem] = {
    "diffusion-sorption": Problem(open=_ds_open, generate=_ds_generate, grid=_ds_grid,
                                  solve=_ds_solve, pde=_ds_pde, check=_ds_check),
    "navier-stokes": Problem(open=_ds_open, generate=_ns_generate, grid=_ns_grid, solve=_ns_solve,
                             pde=_ns_pde, check=_ns_check),
}


def register_problem(name: str, problem: Problem) -> None:
    """Make ``problem`` available to configs as ``problem: name``."""
    _PROBLEMS[name] = problem


def get_problem(name: str, options: dict | None = None) -> Problem:
    """The record of a registered problem, or of ``"module.path:Attribute"`` built with ``options``."""
    if ":" in name:
        return _from_spec(name, dict(options or {}))
    if name not in _PROBLEMS:
        raise ConfigError(f"unknown problem {name!r}; known: {sorted(_PROBLEMS)}, or a pihc.Problem as"
                          " 'module.path:Attribute' (importable from the working directory)")
    if options:
        raise ConfigError(f"problem_options: the registered problem {name!r} takes none; got {sorted(options)}")
    return _PROBLEMS[name]


def problem_of(cfg: Config) -> Problem:
    """The record of ``cfg.problem`` with ``cfg.problem_options``."""
    return get_problem(cfg.problem, cfg.problem_options)


def load_user_problem(spec: str, options: dict | None = None):
    """The :class:`pihc.Problem` named by ``"module.path:Attribute"``, built with ``options``.

    The working directory is put on the import path first (a config names
    modules of the project it runs in).  Every failure is a ConfigError in
    one line: a module that is not found, an attribute it lacks, an object
    that is not a Problem, options the problem does not take.
    """
    from ..problem import Problem as UserProblem

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"problem {spec!r} must look like 'module.path:Attribute'")
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(f"problem {spec!r}: no module named {err.name!r} (run from the directory that holds"
                          f" {module_name.replace('.', '/')}.py, or install it)") from None
    except Exception as err:  # the user's module raised while importing
        raise ConfigError(f"problem {spec!r}: importing {module_name} failed: {type(err).__name__}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if isinstance(getattr(module, n), type)
                           and issubclass(getattr(module, n), UserProblem) and getattr(module, n) is not UserProblem)
            raise ConfigError(f"problem {spec!r}: module {module_name} has no attribute {part!r}"
                              f" (its pihc.Problem classes: {', '.join(names) or 'none'})")
        obj = getattr(obj, part)
    if isinstance(obj, UserProblem):
        if options:
            raise ConfigError(f"problem {spec!r} is an instance; problem_options need its class")
        return obj
    if not (isinstance(obj, type) and issubclass(obj, UserProblem)):
        raise ConfigError(f"problem {spec!r} is {type(obj).__name__} {obj!r}, not a pihc.Problem subclass")
    fields = {f.name for f in dataclasses.fields(obj)}
    unknown = set(options or {}) - fields
    if unknown:
        raise ConfigError(f"problem_options: unknown key(s) {sorted(unknown)} for {spec}; valid keys are"
                          f" {sorted(fields)}")
    try:
        return obj(**(options or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"problem_options for {spec}: {err}") from None


def _from_spec(spec: str, options: dict) -> Problem:
    user = load_user_problem(spec, options)
    from ..data.reference import generate_reference, open_reference

    def solve(u0, pde, grid):
        return user.solve(np.asarray(u0, np.float64), grid)

    return Problem(open=lambda path: open_reference(path, user, spec, options),
                   generate=lambda path, g, progress=True: generate_reference(path, user, g, spec, options,
                                                                                progress=progress),
                   grid=lambda shape: user.grid(tuple(shape)),
                   solve=solve if user.has_solver else None,
                   initial=lambda seeds, grid: user.initial_conditions(seeds, grid),
                   source=user)
