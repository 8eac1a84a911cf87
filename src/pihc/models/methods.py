"""The three methods over one backbone: PI-SC, PI-HC and PI-HC-MoE.

Every method maps an initial condition ``u0`` to a prediction ``u`` on the
grid.  The backbone sees the features ``(coordinates..., u0 broadcast in t)``
with each coordinate scaled to [0, 1].

* :class:`PISC`: the backbone outputs ``u`` (1 channel); the physics enters
  only through the loss.
* :class:`PIHC`: the backbone outputs ``N`` basis functions; a
  :class:`~pihc.constraint.HardConstraint` with one expert picks ``u``.
* :class:`PIHCMoE`: the same with ``prod(splits)`` experts.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..constraint import ConstrainedSolution, HardConstraint
from ..grid import Grid
from ..pdes.base import PDE

__all__ = ["Prediction", "PISC", "PIHC", "PIHCMoE", "input_features"]


class Prediction(eqx.Module):
    """A method's output: ``u`` on the grid, and the constraint layer's output
    (``None`` for PI-SC)."""

    u: Float[Array, "*grid"]
    constrained: ConstrainedSolution | None


Extent = tuple[tuple[float, float], ...]


def input_features(u0: Float[Array, "*space"], grid: Grid, extent: Extent | None = None
                   ) -> Float[Array, "*grid c"]:
    """``(t, x, ..., u0)`` on the grid: coordinates scaled to [0, 1], u0 repeated over t.

    The first grid axis is time; ``u0`` has the shape of the other axes.
    ``extent``: per axis, the interval ``(lo, hi)`` mapped to [0, 1]; default
    the grid's own.  A model trained on a time window and run on the whole
    interval scales both by the whole interval, so a time means the same
    input in both.
    """
    if tuple(u0.shape) != grid.shape[1:]:
        raise ValueError(f"u0 has shape {tuple(u0.shape)}; the grid {grid.names} needs {grid.shape[1:]}")
    extent = tuple((a.lo, a.hi) for a in grid.axes) if extent is None else extent
    coords = [(a.coords - lo) / (hi - lo) for a, (lo, hi) in zip(grid.axes, extent)]
    mesh = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
    u0b = jnp.broadcast_to(u0, grid.shape)[..., None]
    return jnp.concatenate([jnp.asarray(mesh, u0b.dtype), u0b], axis=-1)


class PISC(eqx.Module):
    """Soft constraint: ``u = backbone(features)[..., 0]``.

    Args:
        backbone: a network ``(*grid, grid.ndim + 1) -> (*grid, 1)``.
        pde: the PDE (used by the loss, not by the forward pass).
        grid: the space-time grid.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
    """

    backbone: eqx.Module
    pde: PDE
    grid: Grid = eqx.field(static=True)
    extent: Extent | None = eqx.field(static=True, default=None)

    def __call__(self, u0: Float[Array, "*space"], key: PRNGKeyArray | None = None) -> Prediction:
        x = input_features(u0, self.grid, self.extent)
        with jax.named_scope("pihc.backbone"):
            u = self.backbone(x.astype(jnp.float32))[..., 0].astype(jnp.float64)
        return Prediction(u=u, constrained=None)


class _HardConstrained(eqx.Module):
    backbone: eqx.Module
    constraint: HardConstraint
    extent: Extent | None = eqx.field(static=True, default=None)

    @property
    def pde(self) -> PDE:
        return self.constraint.pde

    @property
    def grid(self) -> Grid:
        return self.constraint.grid

    def basis(self, u0: Float[Array, "*space"]) -> Float[Array, "*grid N"]:
        x = input_features(u0, self.grid, self.extent)
        with jax.named_scope("pihc.backbone"):
            return self.backbone(x.astype(jnp.float32))

    def __call__(self, u0: Float[Array, "*space"], key: PRNGKeyArray) -> Prediction:
        out = self.constraint(self.basis(u0), u0, key)
        return Prediction(u=out.u, constrained=out)


class PIHC(_HardConstrained):
    """Hard constraint, one global expert (``constraint.splits`` all ones).

    Args:
        backbone: a network ``(*grid, grid.ndim + 1) -> (*grid, N)``.
        constraint: a :class:`~pihc.constraint.HardConstraint` with one expert.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
    """

    def __check_init__(self):
        if math.prod(self.constraint.splits) != 1:
            raise ValueError(f"PIHC has one expert; got splits {self.constraint.splits} (use PIHCMoE)")


class PIHCMoE(_HardConstrained):
    """Hard constraint with a mixture of experts (``prod(constraint.splits)`` blocks).

    Args:
        backbone: a network ``(*grid, grid.ndim + 1) -> (*grid, N)``.
        constraint: a :class:`~pihc.constraint.HardConstraint`.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
    """
