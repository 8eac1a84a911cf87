"""pihc: neural PDE solvers whose predictions obey the physics as hard constraints.

The public API (the training harness lives in :mod:`pihc.training` and the
command line in :mod:`pihc.cli`; the core never imports either):

* grids and derivatives: :class:`Grid`, :class:`Axis`, :mod:`pihc.derivatives`
* PDEs: :class:`PDE` (the interface), :class:`DiffusionSorption`
* solver: :func:`least_squares`, :class:`LevenbergMarquardt`, :class:`Solution`,
  :class:`RESULTS`; adjoints :class:`ImplicitAdjoint`, :class:`StructuredAdjoint`
* experts: :func:`partition`, :func:`unpartition`, :class:`RowWeights`
* constraint layer: :class:`HardConstraint`, :func:`linearise`
* devices: :func:`device_mesh` (a ``batch x expert`` mesh, :mod:`pihc.sharding`)
* loss: :func:`physics_loss`, :class:`LossWeights`
* models: :class:`FNO`, :class:`PISC`, :class:`PIHC`, :class:`PIHCMoE`
"""

__version__ = "0.1.0"

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
from .pdes import PDE, DiffusionSorption, diffusion_sorption_grid
from .sharding import device_mesh


def enable_x64() -> None:
    """Switch JAX to float64 (the solver layer needs it); call before creating arrays."""
    import jax

    jax.config.update("jax_enable_x64", True)


__all__ = [
    "Axis", "ConstrainedSolution", "DiffusionSorption", "FNO", "Grid", "GridError", "HardConstraint",
    "ImplicitAdjoint", "LevenbergMarquardt", "Linearisation", "LossWeights", "PDE", "PIHC", "PIHCMoE",
    "PISC", "Prediction", "PrecisionError", "RESULTS", "RowWeights", "Solution", "StructuredAdjoint",
    "derivatives", "device_mesh", "diffusion_sorption_grid", "enable_x64", "least_squares", "linearise", "partition",
    "physics_loss", "unpartition",
]
