"""Reference solutions of a :class:`pihc.Problem`, in an HDF5 file: writing (atomically) and reading.

The layout is PDEBench's, for any number of axes: one group per sample,
``"0000"``, ``"0001"``, ..., holding ``data`` of shape ``(*grid, 1)`` and a
``grid`` group with one coordinate array per axis.  The root attributes say
what the file is: ``format = "pihc"``, ``grid`` (JSON: the axes with their
kinds, so the grid is read back exactly), ``seeds`` (each sample's
initial-condition seed) and ``config`` (JSON: the problem, its options and the
generator's settings).

Reference data are only for scoring: a problem trains on its sampled initial
conditions, never on these solutions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..files import check_writable
from ..grid import Grid
from .hdf5 import DataError, write_pdebench

__all__ = ["ReferenceDataset", "generate_reference", "is_reference", "open_reference", "reference_info",
           "write_reference"]


def write_reference(path, u: np.ndarray, grid: Grid, seeds, config: dict) -> Path:
    """Write the solutions ``u`` ``(n, *grid)`` of initial-condition ``seeds`` atomically, in the
    layout of :func:`~pihc.data.hdf5.write_pdebench` with the grid and the seeds as root attributes."""
    u = np.asarray(u, np.float64)
    grid.check(u[0], what="a reference solution")
    if not np.all(np.isfinite(u)):
        bad = np.flatnonzero(~np.isfinite(u).reshape(len(u), -1).all(axis=1))
        raise DataError("the reference solver returned NaN or Inf for seeds"
                        f" {[int(s) for s in np.asarray(seeds)[bad]]}; nothing was written. Check the solver's"
                        " time step and resolution")
    return write_pdebench(path, [u], grid, config, len(u),
                          attrs={"grid": json.dumps(grid.to_dict()), "seeds": np.asarray(seeds, np.int64)})


def generate_reference(path, problem, g, spec: str, options: dict, *, progress: bool = True) -> Path:
    """Sample ``g.samples`` initial conditions (seeds ``g.seed, g.seed + 1, ...``) of ``problem`` on the
    grid ``(g.nt, g.nx)``, solve them with ``problem.solve`` and write them to ``path``."""
    if not problem.has_solver:
        raise DataError(f"{spec} has no reference solver (define solve(u0, grid) on it) and {path} does not"
                        " exist; give reference data with --data FILE (or data.path), or define the solver")
    check_writable(Path(path), "data.path")
    grid = problem.grid((g.nt, g.nx))
    seeds = g.seed + np.arange(g.samples)
    u0 = problem.initial_conditions(seeds, grid)
    if progress:
        print(f"solving {g.samples} reference trajectories of {spec} on {' x '.join(map(str, grid.shape))}",
              flush=True)
    u = np.asarray(problem.solve(u0, grid), np.float64)
    if u.shape != (len(seeds),) + grid.shape:
        raise DataError(f"{spec}.solve returned shape {u.shape}; expected {(len(seeds),) + grid.shape}"
                        " (samples, then the grid)")
    config = {"problem": spec, "problem_options": options, "problem_fields": _fields(problem),
              "pde": _fields(problem.pde),
              "generator": {"samples": g.samples, "nt": g.nt, "nx": g.nx, "seed": g.seed}}
    return write_reference(path, u, grid, seeds, config)


def _fields(obj) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, (bool, int, float, str)) or v is None:
            out[f.name] = v
        elif np.ndim(v) == 0:
            out[f.name] = float(np.asarray(v))
    return out


def is_reference(path) -> bool:
    """Whether ``path`` is an HDF5 file written by :func:`write_reference`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == "pihc" and "grid" in f.attrs
    except OSError:
        return False


class ReferenceDataset:
    """A reference file of a problem.

    Attributes:
        path, grid, samples (group names), seeds, config (the generator's record),
        pde (the problem's PDE, when opened for a problem, else None).
    """

    def __init__(self, path, problem=None, spec: str | None = None, options: dict | None = None):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file {self.path} does not exist; make it with `pihc generate --config CONFIG`"
                            " or check the path")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(f"{self.path} is not a readable HDF5 file ({err}); check the path, or regenerate it"
                            " with `pihc generate --config CONFIG`") from None
        with f:
            if "grid" not in f.attrs:
                raise DataError(f"{self.path} is not a reference file of a pihc.Problem (no 'grid' attribute);"
                                " make one with `pihc generate --config CONFIG`")
            self.grid = Grid.from_dict(json.loads(f.attrs["grid"]))
            self.config = json.loads(f.attrs["config"]) if "config" in f.attrs else {}
            self.samples = sorted(k for k in f.keys() if k.isdigit())
            self.seeds = np.asarray(f.attrs.get("seeds", np.arange(len(self.samples))), np.int64)
            self.dtype = str(f[self.samples[0]]["data"].dtype) if self.samples else "float64"
        if not self.samples:
            raise DataError(f"{self.path} holds no samples")
        self.pde = None if problem is None else problem.pde
        if spec is not None and problem is not None:
            # The problem's fields (defaults included), so that {} and the default values agree.
            mine = _fields(problem) if "problem_fields" in self.config else dict(options or {})
            recorded = (self.config.get("problem"), self.config.get("problem_fields",
                                                                   self.config.get("problem_options", {})))
            if recorded != (spec, mine):
                raise DataError(f"{self.path} holds reference solutions of {recorded[0]} with {recorded[1]};"
                                f" the config asks for {spec} with {mine}. Give another data.path"
                                " (it is made when missing) or the matching problem_options")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, indices) -> np.ndarray:
        """Samples at ``indices`` (positions in :attr:`samples`): ``(n, *grid)`` float64."""
        import h5py

        indices = np.atleast_1d(np.asarray(indices, int))
        out = np.empty((len(indices),) + self.grid.shape)
        with h5py.File(self.path, "r") as f:
            for j, i in enumerate(indices):
                if not 0 <= i < len(self.samples):
                    raise DataError(f"{self.path} has {len(self.samples)} samples; index {i} is out of range")
                v = np.asarray(f[self.samples[i]]["data"][..., 0], np.float64)
                if v.shape != self.grid.shape:
                    raise DataError(f"{self.path}: sample {self.samples[i]} has shape {v.shape}; the file's grid"
                                    f" is {self.grid.shape}")
                if not np.all(np.isfinite(v)):
                    raise DataError(f"{self.path}: sample {self.samples[i]} contains NaN or Inf; regenerate the file")
                out[j] = v
        return out

    def bad_samples(self) -> list[str]:
        """Names of samples that contain NaN or Inf (reads every sample)."""
        import h5py

        with h5py.File(self.path, "r") as f:
            return [n for n in self.samples if not np.all(np.isfinite(f[n]["data"][()]))]


def open_reference(path, problem=None, spec: str | None = None, options: dict | None = None) -> ReferenceDataset:
    """Open a reference file; with ``spec``, refuse one made for another problem or other options."""
    return ReferenceDataset(path, problem, spec, options)


def reference_info(path, check: bool = False) -> dict:
    """A JSON-able summary: format, samples, grid (shape, axes), seeds, config; ``bad_samples`` with ``check``."""
    ds = ReferenceDataset(path)
    out = {"path": str(ds.path), "format": "pihc", "samples": len(ds.samples), "shape": list(ds.grid.shape),
           "axes": {a.name: {"n": a.n, "range": [a.lo, a.hi], "kind": a.kind} for a in ds.grid.axes},
           "seeds": [int(ds.seeds[0]), int(ds.seeds[-1])], "dtype": ds.dtype, "config": ds.config}
    if check:
        out["bad_samples"] = ds.bad_samples()
    return out
