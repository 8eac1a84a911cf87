"""PDEs: physical constants as fields, terms and residuals as methods."""

from .base import PDE
from .diffusion_sorption import DiffusionSorption, diffusion_sorption_grid

__all__ = ["PDE", "DiffusionSorption", "diffusion_sorption_grid"]
