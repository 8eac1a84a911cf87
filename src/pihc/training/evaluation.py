"""Evaluation of a trained run against the numerical solution.

Metrics (all on the model's grid, over the held-out samples):

* ``rel_l2_mean`` / ``rel_l2_std``: ``||u - u_true||_2 / ||u_true||_2`` per sample.
* ``rel_l2_over_time``: the same per time step (mean over samples).
* ``residual``: mean squared PDE residual of the prediction on the whole grid,
  and the mean squared initial / boundary rows.
* ``experts``: per expert, the constraint residual norm and solver
  iterations (mean over samples) and the number of failed solves.
* ``seams``: mean |PDE residual| within ``seam_width`` points of a boundary
  between experts against the mean elsewhere (independent experts can leave
  jumps at their seams).
* ``timing``: inference seconds per sample (batched, compiled) against the
  numerical solver's seconds per sample at the data's resolution.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..grid import Grid, GridError
from ..losses import physics_loss
from .config import Config
from ..data.hdf5 import DataError, pde_constants
from ..files import check_writable
from .io import MetricsLog, atomic_write_text, finite_json
from .problems import problem_of
from .data import PreparedData, configured_pde, load_fields, mismatched_constant
from .model import on_grid
from .run import load_run


class EvaluationError(ValueError):
    """A trained model's predictions cannot be scored (they are not finite)."""


def seam_mask(grid: Grid, splits, width: int, time_cuts=()) -> np.ndarray:
    """Points within ``width`` grid points of a boundary between experts (on a periodic axis
    with two or more experts, also the one across the wrap, between the last and first block).

    ``time_cuts``: the levels that consecutive time slabs share (``constraint.time_slabs``); the
    ``width`` residual rows on each side of each (rows ``a - width + 1 .. a + width``: row ``i``
    of a one-step stencil reads levels ``i - 1`` and ``i``) are seams too.
    """
    mask = np.zeros(grid.shape, bool)
    for a in time_cuts:
        mask[max(0, a - width + 1):a + width + 1] = True
    for d, (n, s) in enumerate(zip(grid.shape, splits)):
        b = n // s
        near = np.zeros(n, bool)
        for j in range(0 if grid.axes[d].periodic and s > 1 else 1, s):
            near[np.arange(j * b - width, j * b + width) % n] = True
        shape = [1] * grid.ndim
        shape[d] = n
        mask |= near.reshape(shape)
    return mask


def weights_spread(w: np.ndarray) -> float:
    """Mean over samples of ``|w_k - mean_k w| / |mean_k w|``, averaged over the experts.

    0 when every expert picked the same weights: the mixture then predicts
    what one global fit would.  ``w``: (samples, K, N).
    """
    w = np.asarray(w)
    mean = w.mean(axis=1, keepdims=True)
    return float(np.mean(np.linalg.norm(w - mean, axis=-1) / np.linalg.norm(mean, axis=-1)))


def map_chunks(f, arrays, seed: int = 0, chunk: int = 8):
    """``f(*parts, keys)`` over ``chunk``-sized parts of ``arrays`` (leading axis: samples), the
    results concatenated.  The solver keys (the sampled points) depend only on ``seed`` and each
    sample's index, so every caller of this function samples the same points for the same data."""
    n = len(arrays[0])
    outs = []
    for i in range(0, n, chunk):
        keys = chunk_keys(seed, i, min(chunk, n - i))
        outs.append(jax.device_get(f(*(jnp.asarray(a[i:i + chunk]) for a in arrays), keys)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *outs)


def chunk_keys(seed: int, start: int, n: int):
    """The solver keys of samples ``start .. start + n - 1`` of a chunk (:func:`map_chunks`)."""
    return jax.random.split(jax.random.fold_in(jax.random.key(seed), start), n)


def predict(model, u0: np.ndarray, seed: int = 0, chunk: int = 8, compiled=None):
    """Predictions for a stack of initial conditions, compiled once, in chunks.

    ``compiled``: :func:`compiled_model` of ``model``, to reuse its compilation across calls."""
    return map_chunks(compiled_model(model) if compiled is None else compiled, (u0,), seed, chunk)


def compiled_model(model):
    """The jitted, vmapped ``(u0s, keys) -> Prediction`` of ``model``."""
    return jax.jit(jax.vmap(lambda a, k: model(a, k)))


def evaluate(run_dir: str | Path, *, data_path: str | None = None, json_out: str | Path | None = None,
             n_samples: int | None = None, seam_width: int = 3, plots: bool = True,
             grid: tuple[int, ...] | None = None, window: tuple[float, float] | None = None,
             split: str = "test", log: Callable[[str], None] = print) -> dict:
    """Evaluate a run; write ``evaluation.json`` (or ``json_out``) and PNG plots.

    ``grid = (nt, nx[, ny])`` runs the trained model on another grid (:func:`on_grid`:
    same backbone, constraint rebuilt there), e.g. a model trained on 51 x 256
    scored on PDEBench's 101 x 1024 (give that file as ``data_path``).  The
    data must be an integer multiple of that grid.  The results then go to
    ``evaluation-{nt}x{nx}.json`` and ``plots-{nt}x{nx}/``, beside the run's own.

    ``window = (t0, t1)`` also scores the times ``t0 < t <= t1`` alone (key
    ``window``; the plot of the error over time marks it).  A run trained on
    a time window (``data.train_until``) is run on the whole grid, and its
    default window is the times after the training window (extrapolation).

    ``split="train"`` scores the run's own training trajectories instead of
    the held-out ones (the first ``n_samples``, default as many as are held
    out): beside the held-out score it tells a model that has not fitted
    its data from one that does not generalise.  The results go to
    ``evaluation-train.json`` and ``plots-train/``.  It needs the run's own
    data file, holding those trajectories' solutions.

    The output paths are checked before any compute.  Predictions that are
    not finite raise :class:`EvaluationError` and write nothing; the JSON
    never holds NaN (a metric that is not finite is written as null).
    """
    run_dir = Path(run_dir)
    if n_samples is not None and n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples} (leave it unset to evaluate every test sample)")
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if split == "train" and data_path is not None:
        raise ValueError("split='train' scores the run's own training trajectories; another data file holds"
                         " none of them: leave out the data file")
    tag = "" if split == "test" else "-train"
    suffix = ("" if grid is None else "-" + "x".join(map(str, grid))) + tag
    # Every output is checked before any compute: an unwritable path fails now, not after the run.
    check_writable(Path(json_out) if json_out is not None else run_dir / f"evaluation{suffix}.json",
                   "the evaluation's JSON file")
    if plots:
        check_writable(run_dir / f"plots{suffix}", "the plots' directory", directory=True)
    cfg, data, model, meta = load_run(run_dir, log, generate=False)  # a missing file: made when read
    if split == "train" and problem_of(cfg).initial is not None:
        raise EvaluationError(f"{run_dir} trained on sampled initial conditions, whose solutions no file holds:"
                              " score its held-out samples (leave out the split)")
    suffix = tag
    trained_grid = list(data.grid.shape)
    target = tuple(grid) if grid is not None else tuple(data.whole_grid.shape)
    if target != tuple(data.grid.shape):
        cfg, model, new_grid = on_grid(cfg, model, data.pde, *target)
        data = dataclasses.replace(data, grid=new_grid, full_grid=None)
        if data_path is None:
            try:
                data.data_grid.factors_to(new_grid)
            except GridError as err:
                raise GridError(f"{err}. The run's data ({data.path}) cannot be scored on"
                                f" {' x '.join(map(str, target))}; give data on that grid or an integer multiple"
                                " of it with --data") from None
        if grid is not None:
            suffix = "-" + "x".join(map(str, grid)) + tag
    if data_path is not None:
        data = _other_data(cfg, data, data_path)
    pool = data.test_idx if split == "test" else data.train_idx
    if n_samples is not None and n_samples > len(pool):
        raise DataError(f"{data.path} holds {len(pool)} {split} samples; {n_samples} were asked for"
                        " (give at most that many, or leave the number unset)")
    if n_samples is None:  # the training set is scored on as many samples as are held out
        n_samples = len(pool) if split == "test" else min(len(pool), len(data.test_idx))
    idx = pool[:n_samples]
    grid, pde = data.grid, data.pde
    if window is None and cfg.data.train_until is not None:
        window = (cfg.data.train_until, grid.axes[0].hi)
    in_window = None if window is None else window_mask(grid, window)
    truth = load_fields(cfg, data, idx)
    u0 = truth[:, 0]

    compiled = compiled_model(model)
    # Fewer samples per call on large grids (the layer holds the basis and its terms for each):
    # 8 up to 2^18 grid points (every diffusion-sorption grid, Navier-Stokes at 64^3), 1 at 64 x 256^2.
    chunk = min(8, max(1, 2 ** 21 // grid.size))
    pred = predict(model, u0, cfg.run.seed, chunk, compiled=compiled)  # compile + run
    t0 = time.perf_counter()
    pred = predict(model, u0, cfg.run.seed, chunk, compiled=compiled)  # run: the inference time
    infer_s = (time.perf_counter() - t0) / len(u0)
    u = np.asarray(pred.u)
    bad = np.flatnonzero(~np.isfinite(u).reshape(len(u), -1).all(axis=1))
    if bad.size:
        raise EvaluationError(f"the model of {run_dir} (step {meta['step']}) predicts NaN or Inf for {bad.size} of"
                              f" {len(u)} test samples (indices {bad[:10].tolist()}); nothing was written."
                              " Check the run's metrics.jsonl for failed solves and train it further or again")

    err = u - truth
    axes = tuple(range(1, u.ndim))
    rel = np.sqrt((err ** 2).sum(axes)) / np.sqrt((truth ** 2).sum(axes))
    space = tuple(range(2, u.ndim))
    rel_t = np.sqrt((err ** 2).sum(space)) / np.maximum(np.sqrt((truth ** 2).sum(space)), 1e-30)
    # The persistence baseline u(t) = u0: what a model that learnt nothing of the dynamics scores.
    still = truth - truth[:, :1]
    rel_still = np.sqrt((still ** 2).sum(axes)) / np.sqrt((truth ** 2).sum(axes))
    rel_still_t = np.sqrt((still ** 2).sum(space)) / np.maximum(np.sqrt((truth ** 2).sum(space)), 1e-30)

    res = jax.jit(jax.vmap(lambda v, a: pde.residual(pde.terms(v, grid))))(u, u0)
    res = np.asarray(res)
    loss_parts = jax.jit(jax.vmap(lambda v, a: physics_loss(pde, v, a, grid)[1]))
    parts = loss_parts(u, u0)
    truth_parts = loss_parts(truth, u0)  # the data's own residual: the discretisation's share of it
    domain = np.asarray(pde.residual_domain(grid))
    layer = getattr(model, "constraint", None)
    splits = getattr(layer, "splits", (1,) * grid.ndim)
    cuts = [a for a, _ in layer.slab_bounds()[1:]] if layer is not None else []
    seams = seam_mask(grid, splits, seam_width, cuts) & domain
    inner = ~seams & domain
    out = {
        "run": str(run_dir), "step": meta["step"], "method": cfg.model.method,
        "data": data.path, "split": split, "samples": int(len(idx)), "grid": list(grid.shape),
        "trained_grid": trained_grid,
        "rel_l2_mean": float(rel.mean()), "rel_l2_std": float(rel.std()),
        "rel_l2_median": float(np.median(rel)), "rel_l2_max": float(rel.max()),
        "rel_l2_over_time": rel_t.mean(0).tolist(),
        "residual": {k: float(np.mean(v)) for k, v in parts.items()},
        "residual_of_truth": {k: float(np.mean(v)) for k, v in truth_parts.items()},
        "persistence": {"rel_l2_mean": float(rel_still.mean()), "rel_l2_std": float(rel_still.std()),
                        "rel_l2_median": float(np.median(rel_still)), "rel_l2_max": float(rel_still.max()),
                        "rel_l2_over_time": rel_still_t.mean(0).tolist()},
        "seams": {"width": seam_width, "splits": list(splits), "time_slab_levels": cuts,
                  "mean_abs_residual_near_seams": float(np.abs(res)[:, seams].mean()) if seams.any() else None,
                  "mean_abs_residual_interior": float(np.abs(res)[:, inner].mean()) if inner.any() else None},
        "timing": {"inference_s_per_sample": infer_s},
    }
    if in_window is not None:
        ew, tw = err[:, in_window], truth[:, in_window]
        rel_w = np.sqrt((ew ** 2).reshape(len(ew), -1).sum(1)) / np.sqrt((tw ** 2).reshape(len(tw), -1).sum(1))
        out["window"] = {"t_from": float(window[0]), "t_to": float(window[1]), "times": int(in_window.sum()),
                         "trained_until": cfg.data.train_until,
                         "rel_l2_mean": float(rel_w.mean()), "rel_l2_std": float(rel_w.std()),
                         "rel_l2_median": float(np.median(rel_w)), "rel_l2_max": float(rel_w.max())}
    if pred.constrained is not None:
        sol = pred.constrained.solution
        out["experts"] = {
            "weights_spread_rel": weights_spread(pred.constrained.weights),
            "residual_norm_mean": np.asarray(sol.residual_norm).mean(0).tolist(),
            "solver_steps_mean": np.asarray(sol.num_steps).mean(0).tolist(),
            "solver_steps_max": np.asarray(sol.num_steps).max(0).tolist(),
            "failed_solves": np.asarray(sol.status != 0).sum(0).tolist(),
            "status_counts": _status_counts(np.asarray(sol.status)),
        }
    out["timing"].update(_solver_timing(cfg, data, u0))
    target = Path(json_out) if json_out is not None else run_dir / f"evaluation{suffix}.json"
    atomic_write_text(target, json.dumps(finite_json(out), indent=2, allow_nan=False))  # JSON has no NaN
    if plots:
        from .plots import plot_run

        plot_run(run_dir / f"plots{suffix}", grid, truth, u, rel_t, MetricsLog(run_dir / "metrics.jsonl").read(),
                 out.get("experts"), res, weights=dataclasses.asdict(cfg.loss), splits=tuple(splits),
                 window=None if window is None else tuple(window), baseline_t=rel_still_t)
    return out


def _status_counts(status: np.ndarray) -> list[dict]:
    """Per expert, how many samples' solves ended with each solver status (by name)."""
    from ..least_squares import RESULTS

    names = {int(r): r.name for r in RESULTS}
    return [{names.get(int(v), str(int(v))): int(c) for v, c in zip(*np.unique(col, return_counts=True))}
            for col in status.T]


def window_mask(grid: Grid, window: tuple[float, float]) -> np.ndarray:
    """Which times of ``grid`` (its first axis) lie in ``t0 < t <= t1``; raises GridError if none do."""
    t = grid.axes[0].coords
    t0, t1 = window
    tol = 1e-9 * (grid.axes[0].hi - grid.axes[0].lo)  # coordinates carry rounding
    mask = (t > t0 + tol) & (t <= t1 + tol)
    if not t1 > t0 or not mask.any():
        raise GridError(f"the window {t0} < t <= {t1} holds none of the grid's times ({t[0]:g} to {t[-1]:g} every"
                        f" {grid.axes[0].spacing:g}); give t0 < t1 that bracket at least one of them")
    return mask


def _other_data(cfg: Config, data: PreparedData, path: str) -> PreparedData:
    ds = problem_of(cfg).open(Path(path))
    # Data of another PDE, or of the same PDE with other constants, would be scored against the
    # wrong physics: refused by name before the grids are compared.
    have, want = type(ds.pde).__name__, type(data.pde).__name__
    if have != want:
        raise DataError(f"{path} holds {have} data; the run was trained on {want}: give data of {want}"
                        " (pihc data info FILE names a file's PDE)")
    bad = mismatched_constant(ds.pde, pde_constants(data.pde))
    if bad is not None:
        name, value, trained = bad
        # value is a list for a non-scalar constant, so no float format here
        raise DataError(f"{path} holds data with {name} = {value}; the run was trained with {name} ="
                        f" {trained:g}: give data made with {name} = {trained:g}")
    ds.grid.factors_to(data.grid)  # refuses data that is not an integer multiple of the model grid
    n = len(ds.samples)
    n_test = min(cfg.data.test_samples, n)
    return PreparedData(configured_pde(ds.pde, cfg.pde), data.grid, ds.grid, str(path), np.arange(0),
                        np.arange(n - n_test, n))


def _solver_timing(cfg: Config, data: PreparedData, u0: np.ndarray, n: int = 8) -> dict:
    """Seconds per sample of the numerical solver at the data's resolution."""
    problem = problem_of(cfg)
    if problem.solve is None:
        return {}
    ds = problem.open(Path(data.path))
    u0_fine = ds.load(np.asarray(data.test_idx[:n]))[:, 0]
    t0 = time.perf_counter()
    problem.solve(u0_fine, ds.pde, data.data_grid)
    s = (time.perf_counter() - t0) / len(u0_fine)
    return {"numerical_solver_s_per_sample": s, "numerical_solver_output_grid": list(data.data_grid.shape),
            "numerical_solver_note": "the problem's reference solver as it makes the data file, from the data's"
                                     " initial conditions, one process"}
