"""Accuracy of PI-SC, PI-HC and PI-HC-MoE on one problem, with the discretisation floor.

Trains the three configs with the same step budget (each in its own run
directory; an existing finished run is reused), evaluates them on the same
held-out samples, computes the discretisation floor of the grid on those
samples, and writes JSON plus a Markdown table.

    python benchmarks/accuracy.py --configs diffusion-sorption/sc-small \\
        diffusion-sorption/hc-small diffusion-sorption/moe-small --out-dir runs/accuracy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PAPER = {"sc": "85.93% +- 5.07%", "hc": "7.55% +- 8.10%", "moe": "3.60% +- 2.93%"}
NAMES = {"sc": "PI-SC", "hc": "PI-HC", "moe": "PI-HC-MoE"}


def floor_on_samples(cfg, data, n: int = 8) -> dict:
    from pihc.losses import LossWeights
    from pihc.training.floor import discretisation_floor
    from pihc.training.trainer import load_fields

    truth = load_fields(cfg, data, data.test_idx[:n])
    w = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)
    rel = [discretisation_floor(data.pde, data.grid, u, u[0], w)["rel_l2"] for u in truth]
    return {"rel_l2_mean": float(np.mean(rel)), "rel_l2_std": float(np.std(rel)), "samples": n}


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc.training.config import load_config
    from pihc.training.evaluation import evaluate
    from pihc.training.io import read_checkpoint_meta
    from pihc.training.report import write_report
    from pihc.training.trainer import CHECKPOINT, prepare_data, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=[f"diffusion-sorption/{m}-small" for m in ("sc", "hc", "moe")])
    p.add_argument("--set", action="append", default=[], help="override applied to every config")
    p.add_argument("--out-dir", default="runs/accuracy")
    p.add_argument("--json", default="benchmarks/out/accuracy.json")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    a = p.parse_args(argv)

    rows = []
    for name in a.configs:
        cfg = load_config(name, a.set)
        run = Path(a.out_dir) / Path(name).name
        t0 = time.perf_counter()
        done = (run / CHECKPOINT).exists() and read_checkpoint_meta(run / CHECKPOINT)["step"] >= cfg.optim.steps
        if not done:
            train(cfg, run, resume=(run / CHECKPOINT).exists())
        train_s = time.perf_counter() - t0
        ev = evaluate(run)
        write_report(run)
        metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        rows.append({"config": name, "method": cfg.model.method, "run": str(run), "steps": ev["step"],
                     "rel_l2_mean": ev["rel_l2_mean"], "rel_l2_std": ev["rel_l2_std"],
                     "residual_pde": ev["residual"]["pde"], "samples": ev["samples"],
                     "train_wall_s": sum(m["step_time_s"] for m in metrics),
                     "median_step_s": float(np.median([m["step_time_s"] for m in metrics[1:]] or [0])),
                     "failed_solves": int(sum(m.get("failed_solves", 0) for m in metrics)),
                     "this_call_s": train_s})
    cfg0 = load_config(a.configs[0], a.set)
    floor = floor_on_samples(cfg0, prepare_data(cfg0))
    out = {"rows": rows, "floor": floor, "grid": [cfg0.data.nt, cfg0.data.nx]}
    lines = ["| method | config | steps | rel. L2 error (mean +- std) | paper (1024 x 101) | PDE residual (MSE) | train time | failed solves |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {NAMES[r['method']]} | `{r['config']}` | {r['steps']} | {100 * r['rel_l2_mean']:.2f}% +- "
                     f"{100 * r['rel_l2_std']:.2f}% | {PAPER[r['method']]} | {r['residual_pde']:.3g} |"
                     f" {r['train_wall_s'] / 60:.1f} min | {r['failed_solves']} |")
    lines.append(f"| discretisation floor | grid {cfg0.data.nt} x {cfg0.data.nx} | - | {100 * floor['rel_l2_mean']:.2f}%"
                 f" +- {100 * floor['rel_l2_std']:.2f}% | - | - | - | - |")
    out["markdown"] = "\n".join(lines)
    print(out["markdown"])
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=2))
    if a.markdown:
        Path(a.markdown).write_text(out["markdown"] + "\n")
    return out


if __name__ == "__main__":
    main()
