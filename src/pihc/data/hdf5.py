"""HDF5 files in PDEBench's layout: writing (atomically), reading, checking.

Layout (PDEBench's ``1D_diff-sorp_NA_NA.h5``): one group per sample named
``"0000"``, ``"0001"``, ... holding ``data`` of shape ``(nt, nx, 1)`` and a
``grid`` group with ``x`` (nx,) and ``t`` (nt,).  Files written by pihc also
carry root attributes ``format = "pihc"``, ``config`` (JSON: the generator's
resolved settings and the physical constants) and ``pihc_version``; PDEBench's
own file (float32, 10,000 samples, seeds 0000-8999 train / 9000-9999 test)
has none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..files import remove_stale_temps, temp_sibling
from ..grid import Axis, Grid

__all__ = ["DataError", "DiffusionSorptionDataset", "open_dataset", "info", "write_pdebench"]


class DataError(ValueError):
    """A data file is missing, has the wrong layout, or holds bad values."""


def write_pdebench(path, batches: Iterable[np.ndarray], grid: Grid, config: dict, samples: int) -> Path:
    """Write ``(k, nt, nx)`` batches as PDEBench groups; atomic (temp file + rename).

    Nothing is left at ``path`` unless every sample was written; on any error
    (or interrupt) the temporary file is removed and ``path`` keeps what it had
    before.  Temporary files of ``path`` left by a killed writer are removed
    first (:func:`pihc.files.remove_stale_temps`).
    """
    import h5py

    from .. import __version__

    path = Path(path)
    remove_stale_temps(path.parent, path.name)  # left by a writer killed by SIGKILL
    with temp_sibling(path) as tmp:
        written = 0
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "pihc"
            f.attrs["pihc_version"] = __version__
            f.attrs["config"] = json.dumps(config)
            t, x = grid.coords("t"), grid.coords("x")
            for u in batches:
                for v in u:
                    g = f.create_group(f"{written:04d}")
                    g.create_dataset("data", data=np.asarray(v, np.float64)[..., None])
                    gg = g.create_group("grid")
                    gg.create_dataset("x", data=x)
                    gg.create_dataset("t", data=t)
                    written += 1
        if written != samples:
            raise DataError(f"expected {samples} samples, the generator produced {written}")
    return path


class DiffusionSorptionDataset:
    """A diffusion-sorption HDF5 file (pihc's or PDEBench's).

    Attributes:
        path: the file.
        format: ``"pihc"`` or ``"pdebench"``.
        samples: the sample group names, in order.
        grid: the file's grid (t nodes, x cells on (0, 1)).
        pde: a :class:`~pihc.pdes.DiffusionSorption` with the file's constants
            (PDEBench's defaults for PDEBench's file).
        config: the generator's config (pihc files) or ``None``.
    """

    def __init__(self, path):
        import h5py

        from ..pdes.diffusion_sorption import DiffusionSorption

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file {self.path} does not exist; generate it with"
                            " `pihc generate diffusion-sorption --out ...` or check the path")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(f"{self.path} is not a readable HDF5 file ({err}); check the path, or regenerate it"
                            " with `pihc generate`") from None
        with f:
            self.format = "pihc" if f.attrs.get("format") == "pihc" else "pdebench"
            self.config = json.loads(f.attrs["config"]) if "config" in f.attrs else None
            self.samples = sorted(k for k in f.keys() if k.isdigit())
            if not self.samples:
                raise DataError(f"{self.path} has no sample groups ('0000', '0001', ...): not PDEBench's layout")
            first = self._group(f, self.samples[0])
            shape = first["data"].shape
            t = np.asarray(first["grid/t"], np.float64)
            x = np.asarray(first["grid/x"], np.float64)
            self.dtype = str(first["data"].dtype)
            for name in self.samples:
                d = f[name].get("data") if isinstance(f[name], h5py.Group) else None
                if d is None or d.shape != shape:
                    raise DataError(f"{self.path}: sample {name} has data of shape"
                                    f" {None if d is None else d.shape}; sample {self.samples[0]} has {shape}")
        if len(shape) != 3 or shape[2] != 1 or shape[0] != t.size or shape[1] != x.size:
            raise DataError(f"{self.path}: data has shape {shape} but grid/t has {t.size} and grid/x"
                            f" {x.size} points; expected (nt, nx, 1)")
        self.nt, self.nx = int(shape[0]), int(shape[1])
        self.grid = self._make_grid(t, x)
        consts = (self.config or {}).get("pde", {})
        self.pde = DiffusionSorption(**consts)

    def _group(self, f, name):
        import h5py

        g = f[name]
        if not isinstance(g, h5py.Group) or "data" not in g or "grid" not in g or "x" not in g["grid"] \
                or "t" not in g["grid"]:
            raise DataError(f"{self.path}: sample {name} lacks 'data' or 'grid/x', 'grid/t'"
                            " (PDEBench's layout has all three)")
        return g

    def _make_grid(self, t, x) -> Grid:
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

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, indices) -> np.ndarray:
        """Samples at ``indices`` (positions in :attr:`samples`): ``(n, nt, nx)`` float64.

        Raises DataError naming the sample if it holds NaN or Inf.
        """
        import h5py

        indices = np.atleast_1d(np.asarray(indices, int))
        out = np.empty((len(indices), self.nt, self.nx))
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


def open_dataset(path) -> DiffusionSorptionDataset:
    """Open a diffusion-sorption file (pihc's or PDEBench's), validating its layout."""
    return DiffusionSorptionDataset(path)


def info(path, check: bool = False) -> dict:
    """A JSON-able summary: format, samples, nt, nx, ranges, dtype, config.

    With ``check`` every sample is read and ``bad_samples`` lists those
    containing NaN or Inf.
    """
    ds = open_dataset(path)
    out = {"path": str(ds.path), "format": ds.format, "samples": len(ds.samples), "nt": ds.nt,
           "nx": ds.nx, "t": [ds.grid.axes[0].lo, ds.grid.axes[0].hi], "x": [0.0, 1.0],
           "dtype": ds.dtype, "config": ds.config}
    if check:
        out["bad_samples"] = ds.bad_samples()
    return out
