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
             window: tuple[float, float] | None = None) -> list[Path]:
    """Write the standard plots of a 1D+time run to ``out``; return their paths.

    ``window``: the scored time window ``(t0, t1)``, shaded on the error over time."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    t, x = grid.coords(grid.names[0]), grid.coords(grid.names[1])
    ext = [x[0], x[-1], t[0], t[-1]]
    n_show = min(n_show, len(truth))
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
    paths.append(out / "samples.png")
    _save(fig, paths[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    mean, std = rel_t.mean(0), rel_t.std(0)
    ax.plot(t, mean, label="mean over samples")
    ax.fill_between(t, np.maximum(mean - std, 0), mean + std, alpha=0.3, label="+- 1 std")
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

    # Steps whose every solve failed have no loss (recorded as 0 with
    # skipped_update = 1), and a step that stopped the run may have none
    # (null); leave them out of the curves.
    metrics = [m for m in metrics if not m.get("skipped_update") and not m.get("stopped")]
    if metrics:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [m["step"] for m in metrics]
        for key in ("loss", "pde", "initial", "boundary"):
            if key in metrics[0]:
                ax.plot(steps, [m[key] for m in metrics], label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend()
        ax.set_title("training loss")
        paths.append(out / "loss.png")
        _save(fig, paths[-1])
        plt.close(fig)

    fig, axs = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    axs[0].semilogy(x, np.abs(residual).mean((0, 1)))
    axs[0].set_xlabel(grid.names[1])
    axs[0].set_ylabel("mean |PDE residual|")
    axs[0].set_title("residual across space")
    if experts is not None:
        k = np.arange(len(experts["residual_norm_mean"]))
        axs[1].bar(k, experts["residual_norm_mean"])
        axs[1].set_xlabel("expert")
        axs[1].set_ylabel("constraint residual norm")
        axs[1].set_yscale("log")
        axs[1].set_title("per-expert residual")
    else:
        axs[1].axis("off")
    paths.append(out / "residual.png")
    _save(fig, paths[-1])
    plt.close(fig)
    return paths
