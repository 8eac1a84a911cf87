"""pihc: neural PDE solvers whose predictions obey the physics as hard constraints.

The public API (the training harness lives in :mod:`pihc.training` and the
command line in :mod:`pihc.cli`; the core never imports either):

* grids and derivatives: :class:`Grid`, :class:`Axis`, :mod:`pihc.derivatives`
* PDEs: :class:`PDE` (the interface), :class:`DiffusionSorption`, :class:`NavierStokes2D`,
  :func:`check_pde`
* problems: :class:`Problem` (a PDE, its grids, initial conditions, a reference solver)
  and :func:`train` (trains one from Python; imports the harness when called)
* solver: :func:`least_squares`, :class:`LevenbergMarquardt`, :class:`Solution`,
  :class:`RESULTS`; adjoints :class:`ImplicitAdjoint`, :class:`StructuredAdjoint`
* experts: :func:`partition`, :func:`unpartition`, :class:`RowWeights`
* constraint layer: :class:`HardConstraint`, :func:`linearise`
* devices: :func:`device_mesh` (a ``batch x expert`` mesh, :mod:`pihc.sharding`)
* loss: :func:`physics_loss`, :class:`LossWeights`
* models: :class:`FNO`, :class:`PISC`, :class:`PIHC`, :class:`PIHCMoE`
"""

__version__ = "0.1.0"

from .xla_flags import apply_cpu_schedule_flag as _apply_cpu_schedule_flag

_apply_cpu_schedule_flag()  # before any backend starts: see pihc.xla_flags

from . import derivatives
from .adjoint import ImplicitAdjoint, StructuredAdjoint
from .constraint import ConstrainedSolution, HardConstraint
from .experts import RowWeights
from .grid import Axis, Grid, GridError
from .least_squares import RESULTS, LevenbergMarquardt, PrecisionError, Solution, least_squares
from .linearise import Linearisation, linearise
from .losses import LossWeights, physics_loss
from .models import FNO, PIHC, PISC, PIHCMoE, Prediction
from .partition import partition, unpartition
from .pdes import PDE, DiffusionSorption, NavierStokes2D, diffusion_sorption_grid, navier_stokes_grid
from .check import PDEContractError, check_pde
from .problem import Problem
from .sharding import device_mesh


def enable_x64() -> None:
    """Switch JAX to float64 (the solver layer needs it); call before creating arrays."""
    import jax

    jax.config.update("jax_enable_x64", True)


def train(problem, out, *, config=None, overrides=(), max_steps=None, progress=True, log=print, **options):
    """Train a problem from Python (a notebook); returns ``(run_dir, model)``.

    Args:
        problem: a :class:`Problem` subclass given as ``"module.path:Attribute"``,
            a registered problem's name (``"diffusion-sorption"``), or ``None``
            to take it from ``config``.
        out: the run directory (written as ``pihc train --out`` writes it).
        config: a YAML config file or built-in config name; None: the
            defaults of ``pihc.training.config`` (with the problem's, below).
        overrides: ``"key.sub=value"`` strings, as ``pihc train --set``.
        max_steps: stop after that many steps (resume later with the CLI).
        **options: the problem's fields (its ``problem_options``).

    With no config, a :class:`Problem` trains with ``constraint.initial_condition =
    construction`` (the initial condition exact for every weight vector,
    nothing to balance against the PDE).  Evaluate the run with
    ``pihc evaluate RUN`` or ``pihc.training.evaluate(run_dir)``.
    """
    from .training.api import train_problem  # the harness is imported only when called

    return train_problem(problem, out, config=config, overrides=overrides, max_steps=max_steps,
                         progress=progress, log=log, **options)


__all__ = [
    "Axis", "ConstrainedSolution", "DiffusionSorption", "FNO", "Grid", "GridError", "HardConstraint",
    "ImplicitAdjoint", "LevenbergMarquardt", "Linearisation", "LossWeights", "NavierStokes2D", "PDE",
    "PDEContractError", "PIHC", "PIHCMoE", "Problem", "check_pde", "train",
    "PISC", "Prediction", "PrecisionError", "RESULTS", "RowWeights", "Solution", "StructuredAdjoint",
    "derivatives", "device_mesh", "diffusion_sorption_grid", "enable_x64", "least_squares", "linearise",
    "navier_stokes_grid", "partition",
    "physics_loss", "unpartition",
]
