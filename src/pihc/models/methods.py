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

import functools
import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..constraint import ConstrainedSolution, HardConstraint
from ..grid import Grid
from ..pdes.base import PDE

__all__ = ["Prediction", "PISC", "PIHC", "PIHCMoE", "input_features", "initial_tendency", "feature_count"]


class Prediction(eqx.Module):
    """A method's output: ``u`` on the grid, and the constraint layer's output
    (``None`` for PI-SC)."""

    u: Float[Array, "*grid"]
    constrained: ConstrainedSolution | None


Extent = tuple[tuple[float, float], ...]


Features = typing.Literal["initial", "tendency", "taylor"]

# Channels each choice appends to the coordinates: u0; r0 and the Euler step; those and u_tt and
# the second-order Taylor step.
_EXTRA = {"initial": 1, "tendency": 3, "taylor": 5}


def feature_count(ndim: int, features: Features = "initial") -> int:
    """How many input channels :func:`input_features` gives on a grid of ``ndim`` axes."""
    if features not in _EXTRA:
        raise ValueError(f"features must be one of {sorted(_EXTRA)}, got {features!r}")
    return ndim + _EXTRA[features]


def initial_tendency(pde: PDE, u0: Float[Array, "*space"], grid: Grid) -> Float[Array, "*space"]:
    r"""The PDE's residual at the persistence field ``u(t) = u0``: ``r0 = F(terms(u0))``.

    With the time derivative zero (a field constant in time), ``r0`` is the
    rest of the PDE at the initial state, so ``u0 - (t - t_0) r0`` is the
    explicit Euler step from ``u0`` (for ``u_t + N(u) = 0``, ``r0 = N(u0)``).
    Taken at the first time level with a residual row; any PDE, any grid.
    """
    # The field is constant in time, so the first few levels (enough for any
    # time stencil's width) give level 1's residual without the whole grid's work.
    t = grid.axes[0]
    short = grid.until(t.name, float(t.coords[min(t.n - 1, 4)])) if t.n > 5 else grid
    u = jnp.broadcast_to(u0.astype(jnp.float64), short.shape)
    return pde.residual(pde.terms(u, short))[1]


def input_features(u0: Float[Array, "*space"], grid: Grid, extent: Extent | None = None,
                   pde: PDE | None = None, features: Features = "initial") -> Float[Array, "*grid c"]:
    """``(t, x, ..., u0)`` on the grid: coordinates scaled to [0, 1], u0 repeated over t.

    The first grid axis is time; ``u0`` has the shape of the other axes.
    ``extent``: per axis, the interval ``(lo, hi)`` mapped to [0, 1]; default
    the grid's own.  A model trained on a time window and run on the whole
    interval scales both by the whole interval, so a time means the same
    input in both.

    ``features="tendency"`` (needs ``pde``) appends ``r0``
    (:func:`initial_tendency`) and the Euler step ``u0 - (t - t_0) r0``,
    both repeated over t: the first-order change of the state, which a
    network of pointwise-linear lifts and smooth activations would otherwise
    have to build from products of ``u0``'s derivatives.

    ``features="taylor"`` appends, after those, the second time derivative
    and the second-order Taylor step.  For ``u_t + N(u) = 0``,
    ``u_t = -N(u)`` and ``u_tt = -N'(u) u_t = N'(u0) r0`` at ``t_0``: the
    derivative of :func:`initial_tendency` at ``u0`` in the direction
    ``r0`` (one forward-mode product), and the step is
    ``u0 - (t - t_0) r0 + (t - t_0)^2 / 2 u_tt``.
    """
    if tuple(u0.shape) != grid.shape[1:]:
        raise ValueError(f"u0 has shape {tuple(u0.shape)}; the grid {grid.names} needs {grid.shape[1:]}")
    extent = tuple((a.lo, a.hi) for a in grid.axes) if extent is None else extent
    coords = [(a.coords - lo) / (hi - lo) for a, (lo, hi) in zip(grid.axes, extent)]
    mesh = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1)
    u0b = jnp.broadcast_to(u0, grid.shape)[..., None]
    parts = [jnp.asarray(mesh, u0b.dtype), u0b]
    feature_count(grid.ndim, features)  # refuses an unknown choice
    if features != "initial":
        if pde is None:
            raise ValueError(f"features={features!r} needs the PDE")
        dt = jnp.asarray(grid.axes[0].coords - grid.axes[0].lo, u0b.dtype).reshape((-1,) + (1,) * (grid.ndim - 1))
        if features == "taylor":
            # One evaluation of the residual: its value r0, then its tangent map applied to r0.
            r0, tangent = jax.linearize(functools.partial(initial_tendency, pde, grid=grid), u0.astype(jnp.float64))
            utt = tangent(r0)
        else:
            r0 = initial_tendency(pde, u0, grid)
        r0b = jnp.broadcast_to(r0.astype(u0b.dtype), grid.shape)
        step = u0b[..., 0] - dt * r0b
        parts += [r0b[..., None], step[..., None]]
        if features == "taylor":
            uttb = jnp.broadcast_to(utt.astype(u0b.dtype), grid.shape)
            parts += [uttb[..., None], (step + 0.5 * dt ** 2 * uttb)[..., None]]
    return jnp.concatenate(parts, axis=-1)


class PISC(eqx.Module):
    """Soft constraint: ``u = backbone(features)[..., 0]``.

    Args:
        backbone: a network ``(*grid, feature_count(grid.ndim, features)) -> (*grid, 1)``.
        pde: the PDE (used by the loss, not by the forward pass).
        grid: the space-time grid.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
        features: the backbone's inputs, ``initial`` or ``tendency`` (:func:`input_features`).
    """

    backbone: eqx.Module
    pde: PDE
    grid: Grid = eqx.field(static=True)
    extent: Extent | None = eqx.field(static=True, default=None)
    features: Features = eqx.field(static=True, default="initial")

    def __call__(self, u0: Float[Array, "*space"], key: PRNGKeyArray | None = None) -> Prediction:
        x = input_features(u0, self.grid, self.extent, self.pde, self.features)
        with jax.named_scope("pihc.backbone"):
            u = self.backbone(x.astype(jnp.float32))[..., 0].astype(jnp.float64)
        return Prediction(u=u, constrained=None)


class _HardConstrained(eqx.Module):
    backbone: eqx.Module
    constraint: HardConstraint
    extent: Extent | None = eqx.field(static=True, default=None)
    features: Features = eqx.field(static=True, default="initial")

    @property
    def pde(self) -> PDE:
        return self.constraint.pde

    @property
    def grid(self) -> Grid:
        return self.constraint.grid

    def basis(self, u0: Float[Array, "*space"]) -> Float[Array, "*grid N"]:
        x = input_features(u0, self.grid, self.extent, self.pde, self.features)
        with jax.named_scope("pihc.backbone"):
            return self.backbone(x.astype(jnp.float32))

    def __call__(self, u0: Float[Array, "*space"], key: PRNGKeyArray) -> Prediction:
        out = self.constraint(self.basis(u0), u0, key)
        return Prediction(u=out.u, constrained=out)


class PIHC(_HardConstrained):
    """Hard constraint, one global expert (``constraint.splits`` all ones).

    Args:
        backbone: a network ``(*grid, feature_count(grid.ndim, features)) -> (*grid, N)``.
        constraint: a :class:`~pihc.constraint.HardConstraint` with one expert.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
        features: the backbone's inputs, ``initial`` or ``tendency`` (:func:`input_features`).
    """

    def __check_init__(self):
        if math.prod(self.constraint.splits) != 1:
            raise ValueError(f"PIHC has one expert; got splits {self.constraint.splits} (use PIHCMoE)")


class PIHCMoE(_HardConstrained):
    """Hard constraint with a mixture of experts (``prod(constraint.splits)`` blocks).

    Args:
        backbone: a network ``(*grid, feature_count(grid.ndim, features)) -> (*grid, N)``.
        constraint: a :class:`~pihc.constraint.HardConstraint`.
        extent: the coordinates' scale (:func:`input_features`); default the grid's.
        features: the backbone's inputs, ``initial`` or ``tendency`` (:func:`input_features`).
    """
