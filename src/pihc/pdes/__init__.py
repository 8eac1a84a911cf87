"""PDEs: physical constants as fields, terms and residuals as methods."""

from .base import PDE
from .diffusion_sorption import DiffusionSorption, diffusion_sorption_grid
from .navier_stokes import NavierStokes2D, navier_stokes_grid

__all__ = ["PDE", "DiffusionSorption", "NavierStokes2D", "diffusion_sorption_grid", "navier_stokes_grid"]
