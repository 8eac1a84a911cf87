"""HDF5 files in PDEBench's layout: writing (atomically), reading, checking.

Layout (PDEBench's ``1D_diff-sorp_NA_NA.h5``): one group per sample named
``"0000"``, ``"0001"``, ... holding ``data`` of shape ``(nt, *space, 1)`` and a
``grid`` group with ``t`` (nt,) and one array per spatial axis (``x``, and
``y`` in 2D).  Files written by pihc also carry root attributes ``format =
"pihc"``, ``pihc_version`` and ``config`` (JSON: the generator's resolved
settings, ``grid`` (:meth:`pihc.grid.Grid.to_dict`), ``pde_class``
(``"module:Class"``, a :class:`~pihc.pdes.PDE`) and ``pde``, its constants).
One reader serves every problem: the grid and the PDE come from those
attributes.  A file without them (PDEBench's own diffusion-sorption file:
float32, 10,000 samples, seeds 0000-8999 train / 9000-9999 test; or a pihc
file of an earlier version) is diffusion-sorption on cell-centred x.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..files import remove_stale_temps, temp_sibling
from ..grid import Axis, Grid, GridError

__all__ = ["DataError", "Dataset", "DiffusionSorptionDataset", "open_dataset", "info", "pde_constants",
           "write_pdebench"]


class DataError(ValueError):
    """A data file is missing, has the wrong layout, or holds bad values."""


def write_pdebench(path, batches: Iterable[np.ndarray], grid: Grid, config: dict, samples: int, *,
                   pde=None, dtype: str = "float64", attrs: dict | None = None) -> Path:
    """Write ``(k, nt, *space)`` batches as PDEBench groups; atomic (temp file + rename).

    ``config`` is stored with the grid added (and ``pde_class``, the PDE's
    ``module:Class``, when ``pde`` is given).  ``dtype``: the stored precision.
    ``attrs``: further root attributes (a reference file's ``grid`` and ``seeds``).

    Nothing is left at ``path`` unless every sample was written; on any error
    (or interrupt) the temporary file is removed and ``path`` keeps what it had
    before.  Temporary files of ``path`` left by a killed writer are removed
    first (:func:`pihc.files.remove_stale_temps`).
    """
    import h5py

    from .. import __version__

    path = Path(path)
    config = {**config, "grid": grid.to_dict()}
    if pde is not None:
        config["pde_class"] = f"{type(pde).__module__}:{type(pde).__qualname__}"
    remove_stale_temps(path.parent, path.name)  # left by a writer killed by SIGKILL
    with temp_sibling(path) as tmp:
        written = 0
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "pihc"
            f.attrs["pihc_version"] = __version__
            f.attrs["config"] = json.dumps(config)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            coords = {a.name: a.coords for a in grid.axes}
            for u in batches:
                for v in u:
                    grid.check(v, what=f"sample {written:04d}")
                    g = f.create_group(f"{written:04d}")
                    g.create_dataset("data", data=np.asarray(v, dtype)[..., None])
                    gg = g.create_group("grid")
                    for name, c in coords.items():
                        gg.create_dataset(name, data=c)
                    written += 1
        if written != samples:
            raise DataError(f"expected {samples} samples, the generator produced {written}")
    return path


class Dataset:
    """A PDEBench-layout HDF5 file (pihc's or PDEBench's), any PDE.

    Attributes:
        path: the file.
        format: ``"pihc"`` or ``"pdebench"``.
        samples: the sample group names, in order.
        grid: the file's grid (t nodes, then the spatial axes).
        pde: the PDE with the file's constants (the class named by the file's
            ``pde_class``; :class:`~pihc.pdes.DiffusionSorption` with PDEBench's
            defaults for files without one).
        config: the generator's config (pihc files) or ``None``.
        nt, nx, ny: points along t, x and y (``ny`` is None for 1D files).
    """

    def __init__(self, path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file {self.path} does not exist; generate it with"
                            " `pihc generate PROBLEM --out ...` or check the path")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(f"{self.path} is not a readable HDF5 file ({err}); check the path, or regenerate it"
                            " with `pihc generate`") from None
        with f:
            self.format = "pihc" if f.attrs.get("format") == "pihc" else "pdebench"
            try:
                self.config = json.loads(f.attrs["config"]) if "config" in f.attrs else None
            except (TypeError, ValueError):
                raise DataError(f"{self.path}: its 'config' attribute is not JSON; regenerate the file") from None
            self.samples = sorted(k for k in f.keys() if k.isdigit())
            if not self.samples:
                raise DataError(f"{self.path} has no sample groups ('0000', '0001', ...): not PDEBench's layout")
            first = self._group(f, self.samples[0])
            shape = first["data"].shape
            space = self._space_names(first["grid"])
            coords = {n: np.asarray(first["grid"][n], np.float64) for n in ("t",) + space}
            self.dtype = str(first["data"].dtype)
            for name in self.samples:
                d = f[name].get("data") if isinstance(f[name], h5py.Group) else None
                if d is None or d.shape != shape:
                    raise DataError(f"{self.path}: sample {name} has data of shape"
                                    f" {None if d is None else d.shape}; sample {self.samples[0]} has {shape}")
        sizes = tuple(coords[n].size for n in ("t",) + space)
        if len(shape) != len(sizes) + 1 or shape[-1] != 1 or tuple(shape[:-1]) != sizes:
            raise DataError(f"{self.path}: data has shape {shape} but the grid has {sizes} points along"
                            f" {('t',) + space}; expected {sizes + (1,)}")
        self.grid = self._make_grid(coords)
        self.nt, self.nx = self.grid.shape[0], self.grid.shape[1]
        self.ny = self.grid.shape[2] if self.grid.ndim > 2 else None
        self.pde = self._make_pde()
        try:
            self.pde.check_grid(self.grid)
        except GridError as err:
            raise DataError(f"{self.path}: {err}") from None

    def _group(self, f, name):
        import h5py

        g = f[name]
        if not isinstance(g, h5py.Group) or "data" not in g or "grid" not in g or "t" not in g["grid"] \
                or "x" not in g["grid"]:
            raise DataError(f"{self.path}: sample {name} lacks 'data' or 'grid/x', 'grid/t'"
                            " (PDEBench's layout has all three)")
        return g

    def _space_names(self, grid_group) -> tuple[str, ...]:
        recorded = (self.config or {}).get("grid")
        if recorded is not None:
            try:
                names = tuple(a["name"] for a in recorded["axes"][1:])
            except (KeyError, TypeError, IndexError):
                raise DataError(f"{self.path}: the recorded grid is damaged; regenerate the file") from None
            missing = [n for n in names if n not in grid_group]
            if missing:
                raise DataError(f"{self.path}: the samples lack grid/{missing[0]} of the recorded grid")
            return names
        return tuple(n for n in ("x", "y", "z") if n in grid_group)

    def _make_grid(self, coords: dict) -> Grid:
        recorded = (self.config or {}).get("grid")
        if recorded is None:
            return self._pdebench_grid(coords)
        try:
            grid = Grid.from_dict(recorded)
        except (GridError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{self.path}: the recorded grid is invalid ({err}); regenerate the file") from None
        for a in grid.axes:
            c = coords[a.name]
            if c.size != a.n or np.max(np.abs(c - a.coords)) > 1e-5 * max(abs(a.hi - a.lo), 1.0):
                raise DataError(f"{self.path}: grid/{a.name} does not match the recorded {a.kind} axis of {a.n}"
                                f" points on [{a.lo}, {a.hi}]")
        return grid

    def _pdebench_grid(self, coords: dict) -> Grid:
        # Files without a recorded grid: PDEBench's diffusion-sorption (t nodes, x cells on (0, 1)).
        if set(coords) != {"t", "x"}:
            raise DataError(f"{self.path}: a file without pihc's grid attribute must be 1D (grid/t, grid/x),"
                            f" got axes {sorted(coords)}")
        t, x = coords["t"], coords["x"]
        nt, nx = t.size, x.size
        if nt < 2 or nx < 2:
            raise DataError(f"{self.path}: needs at least 2 times and 2 cells, got {nt} x {nx}")
        cells = (np.arange(nx) + 0.5) / nx
        if np.max(np.abs(x - cells)) > 1e-5:
            raise DataError(f"{self.path}: grid/x is not the cell centres of {nx} cells on (0, 1)")
        nodes = np.linspace(t[0], t[-1], nt)
        if np.max(np.abs(t - nodes)) > 1e-5 * max(abs(t[-1]), 1.0):
            raise DataError(f"{self.path}: grid/t is not uniformly spaced")
        return Grid((Axis("t", nt, float(t[0]), float(t[-1]), "nodes"), Axis("x", nx, 0.0, 1.0, "cells")))

    def _make_pde(self):
        from ..pdes.base import PDE
        from ..pdes.diffusion_sorption import DiffusionSorption

        cfg = self.config or {}
        cls = DiffusionSorption
        name = cfg.get("pde_class")
        if name is not None:
            module, _, qual = str(name).partition(":")
            try:
                cls = importlib.import_module(module)
                for part in qual.split("."):
                    cls = getattr(cls, part)
            except (ImportError, AttributeError, ValueError):
                raise DataError(f"{self.path}: its PDE class {name!r} cannot be imported; install the package"
                                " that defines it") from None
            if not (isinstance(cls, type) and issubclass(cls, PDE)):
                raise DataError(f"{self.path}: {name!r} is not a pihc.PDE")
        try:
            return cls(**cfg.get("pde", {}))
        except (TypeError, ValueError) as err:
            raise DataError(f"{self.path}: the recorded constants do not fit {cls.__name__} ({err})") from None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, indices) -> np.ndarray:
        """Samples at ``indices`` (positions in :attr:`samples`): ``(n, *grid.shape)`` float64.

        Raises DataError naming the sample if it holds NaN or Inf.
        """
        import h5py

        indices = np.atleast_1d(np.asarray(indices, int))
        out = np.empty((len(indices),) + self.grid.shape)
        with h5py.File(self.path, "r") as f:
            for j, i in enumerate(indices):
                if not 0 <= i < len(self.samples):
                    raise DataError(f"{self.path} has {len(self.samples)} samples; index {i} is out of range")
                name = self.samples[i]
                v = np.asarray(f[name]["data"][..., 0], np.float64)
                if not np.all(np.isfinite(v)):
                    raise DataError(f"{self.path}: sample {name} contains NaN or Inf; list every bad sample with"
                                    f" `pihc data info {self.path} --check` and regenerate the file")
                out[j] = v
        return out

    def bad_samples(self) -> list[str]:
        """Names of samples that contain NaN or Inf (reads every sample)."""
        import h5py

        bad = []
        with h5py.File(self.path, "r") as f:
            for name in self.samples:
                if not np.all(np.isfinite(f[name]["data"][()])):
                    bad.append(name)
        return bad


DiffusionSorptionDataset = Dataset  # the name of earlier versions


def open_dataset(path) -> Dataset:
    """Open a dataset file (pihc's or PDEBench's), validating its layout."""
    return Dataset(path)


def pde_constants(pde) -> dict:
    """The numeric, non-static fields of a PDE (its physical constants) as a JSON-able dict."""
    out = {}
    for f in dataclasses.fields(pde):
        if f.metadata.get("static", False):
            continue
        v = getattr(pde, f.name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f.name] = float(v)
        elif v is not None and np.ndim(v) == 0 and np.issubdtype(np.asarray(v).dtype, np.number):
            out[f.name] = float(v)
    return out


def info(path, check: bool = False) -> dict:
    """A JSON-able summary: format, samples, nt, nx (ny), ranges, dtype, the PDE and its constants, config.

    With ``check`` every sample is read and ``bad_samples`` lists those
    containing NaN or Inf.
    """
    ds = open_dataset(path)
    out = {"path": str(ds.path), "format": ds.format, "samples": len(ds.samples), "nt": ds.nt, "nx": ds.nx}
    if ds.ny is not None:
        out["ny"] = ds.ny
    out |= {a.name: [a.lo, a.hi] for a in ds.grid.axes}
    out |= {"dtype": ds.dtype, "pde": {"class": type(ds.pde).__name__, "constants": pde_constants(ds.pde)},
            "config": ds.config}
    if check:
        out["bad_samples"] = ds.bad_samples()
    return out
