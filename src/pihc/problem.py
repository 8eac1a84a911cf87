"""A problem: a PDE, the grids it lives on, its initial conditions and (optionally) a reference solver.

Physics-informed training needs only initial conditions: the loss is the
PDE's residual and rows, never a solution.  A :class:`Problem` therefore
says

* ``pde``: the :class:`~pihc.pdes.PDE` (its constants from the problem's fields);
* ``grid(shape)``: the space-time grid with ``shape`` points per axis (time first),
  for any number of space axes;
* ``initial_condition(seed, grid)``: one initial condition on the grid's space
  axes, a function of ``seed`` only (so sample ``i`` is the same at every
  resolution and in every run);
* ``solve(u0, grid)`` (optional): reference solutions for scoring a trained
  model.  Training never calls it.

A config names a problem as ``problem: "module.path:Attribute"`` and gives its
fields under ``problem_options``; ``pihc train``, ``evaluate``, ``generate``
and ``data info`` then work on it (docs/pdes.md).
"""

from __future__ import annotations

import abc

import equinox as eqx
import numpy as np
from jaxtyping import Float

from .grid import Grid, GridError
from .pdes.base import PDE

__all__ = ["Problem"]


class Problem(eqx.Module):
    """Abstract problem.  Subclass it; fields are the constructor's options (``problem_options``).

    Example (periodic viscous Burgers, ``examples/burgers.py``)::

        class BurgersProblem(pihc.Problem):
            viscosity: float = 0.01
            t_end: float = 1.0

            @property
            def pde(self):
                return Burgers(self.viscosity)

            def grid(self, shape):
                nt, nx = shape
                return pihc.Grid((pihc.Axis("t", nt, 0.0, self.t_end),
                                  pihc.Axis("x", nx, 0.0, 1.0, "periodic")))

            def initial_condition(self, seed, grid):
                rng = np.random.default_rng(seed)
                ...  # a smooth random function evaluated at grid.coords("x")
    """

    @property
    @abc.abstractmethod
    def pde(self) -> PDE:
        """The PDE, with the problem's physical constants."""

    @abc.abstractmethod
    def grid(self, shape: tuple[int, ...]) -> Grid:
        """The grid with ``shape`` points per axis: time first, then the space axes."""

    @abc.abstractmethod
    def initial_condition(self, seed: int, grid: Grid) -> np.ndarray:
        """Initial condition number ``seed`` on ``grid``'s space axes, shape ``grid.shape[1:]``.

        Evaluate a function of the coordinates (``grid.coords(name)``), so that
        the same seed gives the same function on every grid.
        """

    def solve(self, u0: Float[np.ndarray, "n *space"], grid: Grid) -> Float[np.ndarray, "n *grid"]:
        """Reference solutions of the initial conditions ``u0`` on ``grid`` (optional).

        Used only to score a trained model (``pihc evaluate``, the held-out
        error during training, ``pihc generate``).  A problem without one is
        trained all the same and scored against data given as a file.
        """
        raise NotImplementedError(f"{type(self).__name__} has no reference solver (define solve(u0, grid))")

    @property
    def has_solver(self) -> bool:
        """Whether :meth:`solve` is defined."""
        return type(self).solve is not Problem.solve

    def initial_conditions(self, seeds, grid: Grid) -> np.ndarray:
        """``(len(seeds), *grid.shape[1:])`` float64: :meth:`initial_condition` of each seed, checked.

        Raises :class:`~pihc.grid.GridError` naming the seed whose initial
        condition has the wrong shape or is not finite.
        """
        space = grid.shape[1:]
        out = np.empty((len(seeds),) + space)
        for j, seed in enumerate(seeds):
            u0 = np.asarray(self.initial_condition(int(seed), grid), np.float64)
            if u0.shape != space:
                raise GridError(f"{type(self).__name__}.initial_condition(seed={int(seed)}) has shape {u0.shape};"
                                f" the grid {grid.names} needs {space} (one value per point of the space axes)")
            if not np.all(np.isfinite(u0)):
                raise GridError(f"{type(self).__name__}.initial_condition(seed={int(seed)}) holds NaN or Inf")
            out[j] = u0
        return out
