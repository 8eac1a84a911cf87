"""PNG plots of a run: prediction/truth/error maps, error over time, losses, experts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..grid import Grid


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path):
    from .io import atomic_write_bytes
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_run(out: Path, grid: Grid, truth: np.ndarray, pred: np.ndarray, rel_t: np.ndarray,
             metrics: list[dict], experts: dict | None, residual: np.ndarray, n_show: int = 3,
             weights: dict | None = None, splits: tuple[int, ...] | None = None,
             window: tuple[float, float] | None = None, baseline_t: np.ndarray | None = None) -> list[Path]:
    """Write the standard plots of a 1D+time or 2D+time run to ``out``; return their paths.

    1D+time: prediction, truth and error maps over (t, x) (``samples.png``);
    2D+time: maps over (x, y) at a few times (``snapshots.png``).
    ``window``: the scored time window ``(t0, t1)``, shaded on the error over time.
    ``baseline_t``: (samples, nt), the persistence baseline's error over time, drawn beside the model's.
    ``weights``: the config's loss weights (:func:`plot_loss`); ``splits``: the experts per axis (their labels)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    t, x = grid.coords(grid.names[0]), grid.coords(grid.names[1])
    ext = [x[0], x[-1], t[0], t[-1]]
    n_show = min(n_show, len(truth))
    if grid.ndim == 3:
        paths.append(_snapshots(out / "snapshots.png", grid, truth, pred, min(n_show, 2)))
    else:
        paths.append(_samples(out / "samples.png", grid, truth, pred, n_show, ext))
    _error_over_time(out, grid, t, rel_t, window, baseline_t, paths)
    if plot_loss(out / "loss.png", metrics, weights) is not None:
        paths.append(out / "loss.png")
    _residuals(out, grid, t, x, residual, experts, splits, paths)
    return paths


def _samples(path: Path, grid: Grid, truth, pred, n_show: int, ext) -> Path:
    plt = _plt()
    fig, axs = plt.subplots(n_show, 3, figsize=(12, 3.2 * n_show), squeeze=False, layout="constrained")
    for i in range(n_show):
        vmin, vmax = truth[i].min(), truth[i].max()
        for j, (img, title, cm) in enumerate([(pred[i], "prediction", "viridis"),
                                              (truth[i], "numerical solution", "viridis"),
                                              (pred[i] - truth[i], "error", "RdBu_r")]):
            kw = dict(vmin=vmin, vmax=vmax) if j < 2 else {}
            if j == 2:
                a = np.abs(img).max() or 1.0
                kw = dict(vmin=-a, vmax=a)
            im = axs[i, j].imshow(img, origin="lower", aspect="auto", extent=ext, cmap=cm, **kw)
            axs[i, j].set_title(f"sample {i}: {title}")
            axs[i, j].set_xlabel(grid.names[1])
            axs[i, j].set_ylabel(grid.names[0])
            fig.colorbar(im, ax=axs[i, j])
    _save(fig, path)
    plt.close(fig)
    return path


def _snapshots(path: Path, grid: Grid, truth, pred, n_show: int, n_times: int = 3) -> Path:
    """Truth, prediction and error over the two spatial axes at ``n_times`` times after the first."""
    plt = _plt()
    nt = grid.shape[0]
    times = sorted({int(round(k * (nt - 1) / n_times)) for k in range(1, n_times + 1)})
    t = grid.coords(grid.names[0])
    a, b = grid.axes[1], grid.axes[2]
    ext = [b.lo, b.hi, a.lo, a.hi]
    rows = [(i, k) for i in range(n_show) for k in times]
    fig, axs = plt.subplots(len(rows), 3, figsize=(11, 3.2 * len(rows)), squeeze=False, layout="constrained")
    for r, (i, k) in enumerate(rows):
        lim = np.abs(truth[i, k]).max() or 1.0
        err = pred[i, k] - truth[i, k]
        e = np.abs(err).max() or 1.0
        for j, (img, title, kw) in enumerate([(truth[i, k], "numerical solution", dict(vmin=-lim, vmax=lim)),
                                              (pred[i, k], "prediction", dict(vmin=-lim, vmax=lim)),
                                              (err, "error", dict(vmin=-e, vmax=e))]):
            im = axs[r, j].imshow(img, origin="lower", extent=ext, cmap="RdBu_r", **kw)
            axs[r, j].set_title(f"sample {i}, {grid.names[0]} = {t[k]:.3g}: {title}")
            axs[r, j].set_xlabel(grid.names[2])
            axs[r, j].set_ylabel(grid.names[1])
            fig.colorbar(im, ax=axs[r, j])
    _save(fig, path)
    plt.close(fig)
    return path


def _error_over_time(out: Path, grid: Grid, t, rel_t, window, baseline_t, paths: list) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    mean, std = rel_t.mean(0), rel_t.std(0)
    ax.plot(t, mean, label="mean over samples")
    ax.fill_between(t, np.maximum(mean - std, 0), mean + std, alpha=0.3, label="+- 1 std")
    if baseline_t is not None:
        ax.plot(t, np.mean(baseline_t, axis=0), "k--", label=f"persistence {grid.names[0]} -> u0")
    if window is not None:
        ax.axvspan(max(window[0], t[0]), min(window[1], t[-1]), color="grey", alpha=0.15,
                   label=f"scored window {window[0]:g} < {grid.names[0]} <= {window[1]:g}")
    ax.set_xlabel(grid.names[0])
    ax.set_ylabel("relative L2 error")
    ax.set_yscale("log")
    ax.legend()
    paths.append(out / "error_over_time.png")
    _save(fig, paths[-1])
    plt.close(fig)


def _residuals(out: Path, grid: Grid, t, x, residual, experts, splits, paths: list) -> None:
    plt = _plt()
    fig, axs = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    if grid.ndim == 2:
        axs[0].semilogy(x, np.abs(residual).mean((0, 1)))
        axs[0].set_xlabel(grid.names[1])
        axs[0].set_title("residual across space")
    else:
        axs[0].semilogy(t[1:], np.abs(residual).mean(axis=(0,) + tuple(range(2, residual.ndim)))[1:])
        axs[0].set_xlabel(grid.names[0])
        axs[0].set_title("residual over time (mean over space)")
    axs[0].set_ylabel("mean |PDE residual|")
    if experts is not None:
        k = np.arange(len(experts["residual_norm_mean"]))
        axs[1].bar(k, experts["residual_norm_mean"])
        axs[1].set_xticks(k, expert_labels(grid, splits or (1,) * (grid.ndim - 1) + (len(k),), len(k)),
                          rotation=30, ha="right", fontsize=8)
        axs[1].set_xlabel("expert")
        axs[1].set_ylabel("constraint residual norm")
        axs[1].set_yscale("log")
        axs[1].set_title("per-expert residual")
    else:
        axs[1].axis("off")
    paths.append(out / "residual.png")
    _save(fig, paths[-1])
    plt.close(fig)


def expert_labels(grid: Grid, splits, n_experts: int | None = None) -> list[str]:
    """One label per expert, in the experts' order: its number and its block, e.g. ``1: x 0.5-1``.

    ``n_experts`` a multiple ``S`` of ``prod(splits)``: the layer's experts in ``S`` time slabs
    (``constraint.time_slabs``), slab by slab, each label prefixed with its slab.
    """
    slabs = 1 if n_experts is None else max(1, n_experts // int(np.prod(splits)))
    labels = []
    for j in range(slabs):
        for idx in np.ndindex(*splits):
            parts = [f"slab {j}"] if slabs > 1 else []
            for a, s, i in zip(grid.axes, splits, idx):
                if s > 1:
                    lo, hi = a.lo + (a.hi - a.lo) * i / s, a.lo + (a.hi - a.lo) * (i + 1) / s
                    parts.append(f"{a.name} {lo:.3g}-{hi:.3g}")
            k = len(labels)
            labels.append(f"{k}: " + ", ".join(parts) if parts else f"{k}")
    return labels


def plot_loss(path: Path, metrics: list[dict], weights: dict | None = None) -> Path | None:
    """The training curves: the loss, each weighted part on its own axis (scale), and the held-out error.

    ``weights``: the config's ``loss`` section (``pde``, ``initial``, ``boundary``);
    each part is drawn times its weight, i.e. as it enters the loss.  A part
    that is zero throughout (an initial condition by construction, a periodic
    problem's boundary) is left out.  Returns None when there is nothing to draw.
    """
    # Steps whose every solve failed have no loss (recorded as 0 with
    # skipped_update = 1), and a step that stopped the run may have none
    # (null); leave them out of the curves.
    metrics = [m for m in metrics if not m.get("skipped_update") and not m.get("stopped")]
    if not metrics:
        return None
    weights = weights or {}
    panels = [("loss", "training loss", 1.0)]
    for key in ("pde", "initial", "boundary"):
        w = float(weights.get(key, 1.0))
        if key in metrics[0] and w > 0 and any(m[key] > 0 for m in metrics):
            panels.append((key, f"{w:g} x {key} part", w))
    held = [m for m in metrics if "heldout_rel_l2" in m]
    plt = _plt()
    n = len(panels) + bool(held)
    fig, axs = plt.subplots(1, n, figsize=(3.6 * n, 3.2), squeeze=False, layout="constrained")
    steps = [m["step"] for m in metrics]
    for ax, (key, title, w) in zip(axs[0], panels):
        ax.plot(steps, [w * m[key] for m in metrics])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
    if held:
        ax = axs[0, -1]
        ax.plot([m["step"] for m in held], [100 * m["heldout_rel_l2"] for m in held], "o-")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("%")
        ax.set_title("held-out relative L2 error")
    _save(fig, path)
    plt.close(fig)
    return path
