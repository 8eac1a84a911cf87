"""pihc: neural PDE solvers whose predictions obey the physics as hard constraints.

The public API (the training harness lives in :mod:`pihc.training` and the
command line in :mod:`pihc.cli`; the core never imports either):

* grids and derivatives: :class:`Grid`, :class:`Axis`, :mod:`pihc.derivatives`
* PDEs: :class:`PDE` (the interface), :class:`DiffusionSorption`
* solver: :func:`least_squares`, :class:`Solution`, :class:`RESULTS`
* experts: :func:`partition`, :func:`unpartition`
* constraint layer: :class:`HardConstraint`, :class:`ConstraintWeights`
* loss: :func:`physics_loss`, :class:`LossWeights`
* models: :class:`FNO`, :class:`PISC`, :class:`PIHC`, :class:`PIHCMoE`
"""

__version__ = "0.1.0"

from . import derivatives
from .constraint import ConstrainedSolution, ConstraintWeights, HardConstraint, linearise
from .grid import Axis, Grid, GridError
from .least_squares import RESULTS, PrecisionError, Solution, least_squares
from .losses import LossWeights, physics_loss
from .models import FNO, PIHC, PISC, PIHCMoE, Prediction
from .partition import partition, unpartition
from .pdes import PDE, DiffusionSorption, diffusion_sorption_grid


def enable_x64() -> None:
    """Switch JAX to float64 (the solver layer needs it); call before creating arrays."""
    import jax

    jax.config.update("jax_enable_x64", True)


__all__ = [
    "Axis", "ConstrainedSolution", "ConstraintWeights", "DiffusionSorption", "FNO", "Grid",
    "GridError", "HardConstraint", "LossWeights", "PDE", "PIHC", "PIHCMoE", "PISC", "Prediction",
    "PrecisionError", "RESULTS", "Solution", "derivatives", "diffusion_sorption_grid",
    "enable_x64", "least_squares", "linearise", "partition", "physics_loss", "unpartition",
]
