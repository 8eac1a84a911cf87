"""Space-time grids: named axes with coordinates, spacing and periodicity.

A :class:`Grid` is static metadata (hashable, usable as a static argument of
``jax.jit``); arrays defined on it have shape ``grid.shape + channels``.
Three kinds of axis cover the problems of this library:

``"nodes"``
    ``n`` points ``lo, lo + h, ..., hi`` with ``h = (hi - lo) / (n - 1)``
    (end points included), e.g. the time axis of PDEBench files.
``"cells"``
    ``n`` cell centres ``lo + (i + 1/2) h`` with ``h = (hi - lo) / n``, as in
    a finite-volume scheme (the x axis of diffusion-sorption).
``"periodic"``
    ``n`` points ``lo + i h`` with ``h = (hi - lo) / n`` on a circle of
    length ``hi - lo`` (Navier-Stokes on the torus).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from jaxtyping import Array

AxisKind = Literal["nodes", "cells", "periodic"]
_KINDS = ("nodes", "cells", "periodic")


class GridError(ValueError):
    """A grid, or an array on it, is not what the caller asked for."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One named axis of a :class:`Grid`.

    Args:
        name: axis name, e.g. ``"t"`` or ``"x"``.
        n: number of points.
        lo: lower end of the interval.
        hi: upper end of the interval.
        kind: ``"nodes"``, ``"cells"`` or ``"periodic"`` (see module docstring).
    """

    name: str
    n: int
    lo: float
    hi: float
    kind: AxisKind = "nodes"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise GridError(f"axis {self.name!r}: kind must be one of {_KINDS}, got {self.kind!r}")
        if int(self.n) != self.n or self.n < 2:
            raise GridError(f"axis {self.name!r}: needs at least 2 points, got n={self.n}")
        if not self.hi > self.lo:
            raise GridError(f"axis {self.name!r}: needs hi > lo, got [{self.lo}, {self.hi}]")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))

    @property
    def periodic(self) -> bool:
        return self.kind == "periodic"

    @property
    def spacing(self) -> float:
        if self.kind == "nodes":
            return (self.hi - self.lo) / (self.n - 1)
        return (self.hi - self.lo) / self.n

    @property
    def coords(self) -> np.ndarray:
        h = self.spacing
        i = np.arange(self.n, dtype=np.float64)
        if self.kind == "cells":
            return self.lo + (i + 0.5) * h
        return self.lo + i * h

    def coarsen(self, factor: int) -> "Axis":
        """The axis with ``factor`` times fewer points on the same interval.

        Nodes keep every ``factor``-th point (``n - 1`` must be divisible);
        cells and periodic points need ``n`` divisible by ``factor``.
        """
        factor = int(factor)
        if factor < 1:
            raise GridError(f"axis {self.name!r}: coarsening factor must be >= 1, got {factor}")
        if self.kind == "nodes":
            if (self.n - 1) % factor:
                raise GridError(
                    f"axis {self.name!r} has {self.n} nodes; keeping every {factor}-th needs"
                    f" (n - 1) = {self.n - 1} divisible by {factor}")
            return dataclasses.replace(self, n=(self.n - 1) // factor + 1)
        if self.n % factor:
            raise GridError(f"axis {self.name!r} has {self.n} points, not divisible by {factor}")
        return dataclasses.replace(self, n=self.n // factor)

    def until(self, hi: float) -> "Axis":
        """The axis's first points, up to and including coordinate ``hi``: the same spacing on a
        shorter interval (``"nodes"`` axes only, e.g. a time window that starts at ``lo``)."""
        if self.kind != "nodes":
            raise GridError(f"axis {self.name!r} ({self.kind}): only a nodes axis can be cut to a window")
        h = self.spacing
        # The coordinate of a node may carry rounding: a node within 1e-9 h of hi is kept.
        n = int(np.floor((hi - self.lo) / h + 1e-9)) + 1
        if n < 2 or n > self.n:
            raise GridError(f"axis {self.name!r}: a window up to {hi} must hold at least 2 of its nodes and lie"
                            f" within [{self.lo}, {self.hi}] (nodes every {h:g})")
        return dataclasses.replace(self, n=n, hi=self.lo + (n - 1) * h)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A tensor-product grid: an ordered tuple of named :class:`Axis`.

    Example:
        >>> g = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 1024, 0.0, 1.0, "cells")))
        >>> g.shape
        (101, 1024)
    """

    axes: tuple[Axis, ...]

    def __post_init__(self):
        object.__setattr__(self, "axes", tuple(self.axes))
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise GridError(f"axis names must be unique, got {names}")
        if not self.axes:
            raise GridError("a grid needs at least one axis")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(a.n for a in self.axes)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def index(self, name: str) -> int:
        """Position of the axis called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise GridError(f"grid has axes {self.names}; no axis named {name!r}") from None

    def axis(self, name: str) -> Axis:
        return self.axes[self.index(name)]

    def spacing(self, name: str) -> float:
        return self.axis(name).spacing

    def coords(self, name: str) -> np.ndarray:
        return self.axis(name).coords

    def mesh(self) -> np.ndarray:
        """Coordinates of every point, shape ``(*shape, ndim)``."""
        return np.stack(np.meshgrid(*[a.coords for a in self.axes], indexing="ij"), axis=-1)

    def check(self, x, channels: int = 0, what: str = "array") -> None:
        """Raise :class:`GridError` unless ``x.shape[:ndim]`` is this grid's shape."""
        shape = tuple(x.shape)
        if len(shape) != self.ndim + channels or shape[: self.ndim] != self.shape:
            raise GridError(
                f"{what} has shape {shape}; expected {self.shape} (axes {self.names})"
                + (f" followed by {channels} channel axes" if channels else ""))

    def coarsen(self, factors: dict[str, int]) -> "Grid":
        unknown = set(factors) - set(self.names)
        if unknown:
            raise GridError(f"grid has axes {self.names}; cannot coarsen unknown axes {sorted(unknown)}")
        return Grid(tuple(a.coarsen(factors.get(a.name, 1)) for a in self.axes))

    def until(self, name: str, hi: float) -> "Grid":
        """The grid with axis ``name`` cut to its points up to ``hi`` (:meth:`Axis.until`)."""
        i = self.index(name)
        return Grid(self.axes[:i] + (self.axes[i].until(hi),) + self.axes[i + 1:])

    def restrict(self, x: np.ndarray | Array, factors: dict[str, int]) -> np.ndarray | Array:
        """Transfer grid values to :meth:`coarsen` ``(factors)``.

        Nodes and periodic points are subsampled (every ``factor``-th value);
        cell-centred axes are averaged over each group of ``factor`` cells, so
        the result lives at the coarse cell centres (the conservative
        restriction of a finite-volume field; plain striding would shift the
        points by ``(factor - 1) h / 2``).

        Works on NumPy and JAX arrays alike (reshape, mean and slicing only),
        so it can sit inside a jitted loss.  A node axis of length 1 (an
        initial condition as ``x[None]`` on a space-time grid) stays as it is.
        """
        x = x if hasattr(x, "reshape") else np.asarray(x)
        coarse = self.coarsen(factors)
        for d, (a, c) in enumerate(zip(self.axes, coarse.axes)):
            f = factors.get(a.name, 1)
            if f == 1:
                continue
            if a.kind == "cells":
                shp = x.shape[:d] + (c.n, f) + x.shape[d + 1:]
                x = x.reshape(shp).mean(axis=d + 1)
            else:
                x = x[(slice(None),) * d + (slice(None, None, f),)]
        return x

    def factors_to(self, other: "Grid") -> dict[str, int]:
        """Integer factors such that ``self.coarsen(factors) == other``, or raise."""
        if other.names != self.names:
            raise GridError(f"grids have different axes: {self.names} vs {other.names}")
        out = {}
        for a, b in zip(self.axes, other.axes):
            # Intervals read back from files carry rounding (float32 coordinates).
            tol = 1e-6 * (b.hi - b.lo)
            if a.kind != b.kind or abs(a.lo - b.lo) > tol or abs(a.hi - b.hi) > tol:
                raise GridError(
                    f"axis {a.name!r}: data spans [{a.lo}, {a.hi}] ({a.kind}), the model"
                    f" [{b.lo}, {b.hi}] ({b.kind}); they must cover the same interval")
            m = (a.n - 1) if a.kind == "nodes" else a.n
            k = (b.n - 1) if b.kind == "nodes" else b.n
            if m % k:
                raise GridError(
                    f"axis {a.name!r}: the data has {a.n} points and the model {b.n}; only data on"
                    " a grid that is an integer multiple of the model's can be used (it is"
                    " subsampled); regenerate the data or change the model grid")
            out[a.name] = m // k
        return out

    def to_dict(self) -> dict:
        return {"axes": [dataclasses.asdict(a) for a in self.axes]}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        return cls(tuple(Axis(**a) for a in d["axes"]))
