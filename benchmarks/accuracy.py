"""Accuracy of PI-SC, PI-HC and PI-HC-MoE on one problem, with the discretisation floor.

Trains the three configs with the same step budget (each in its own run
directory; an existing finished run is reused, and so is its evaluation
JSON when it scored the final step), evaluates them on the same
held-out samples, computes the discretisation floor of the grid on those
samples, and writes JSON plus a Markdown table.  With ``--seeds`` every
config is trained once per seed (``run.seed``: the network's
initialisation, the batch order and the sampled points; the data stay the
same), and the table gives each method's runs, their mean, median and
worst, and whether PI-HC-MoE < PI-HC < PI-SC holds seed by seed.

    python benchmarks/accuracy.py --configs diffusion-sorption/sc-small \\
        diffusion-sorption/hc-small diffusion-sorption/moe-small --out-dir runs/accuracy
    python benchmarks/accuracy.py --seeds 0 1 2 --out-dir runs/accuracy
    python benchmarks/accuracy.py --small --seeds 0 1   # quick check: tiny models, two steps each
    python benchmarks/accuracy.py --configs navier-stokes/{sc,hc,moe}-small --seeds 0 1 2 3 \
        --also-grid 22x64x64 --also-grid 22x128x128:data/navier-stokes-128-test.h5 --floor-samples 0

``--also-grid NTxNX[xNY][:DATA]`` also scores each run on another grid
(super-resolution: the same backbone, the constraint rebuilt there), on
DATA's held-out samples when given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _record import save

# The paper's Table 1, per problem (its full configs: 101 x 1024 and 64 x 256^2).
PAPER = {"diffusion-sorption": {"sc": "85.93% +- 5.07%", "hc": "7.55% +- 8.10%", "moe": "3.60% +- 2.93%"},
         "navier-stokes": {"sc": "18.08% +- 3.74%", "hc": "11.75% +- 2.95%", "moe": "8.30% +- 2.35%"}}
NAMES = {"sc": "PI-SC", "hc": "PI-HC", "moe": "PI-HC-MoE"}
# --small: a tiny grid, dataset and network, two training steps (the data file is generated when missing).
SMALL = ["data.path=benchmarks/out/diffusion-sorption-tiny.h5", "data.generate.samples=8",
         "data.generate.nt=11", "data.generate.nx=64", "data.nt=11", "data.nx=64", "data.train_samples=4",
         "data.test_samples=4", "model.width=8", "model.modes=[3,4]", "model.layers=2", "model.n_basis=4",
         "constraint.n_points=40", "optim.batch=2", "optim.steps=2",
         "optim.decay_every=1", "run.checkpoint_every=1"]


def floor_on_samples(cfg, data, n: int = 8) -> dict:
    from pihc import LossWeights
    from pihc.training import discretisation_floor, load_fields

    truth = load_fields(cfg, data, data.test_idx[:n])
    w = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)
    rel = [discretisation_floor(data.pde, data.grid, u, u[0], w)["rel_l2"] for u in truth]
    return {"rel_l2_mean": float(np.mean(rel)), "rel_l2_std": float(np.std(rel)), "samples": n}


def seed_summary(rows: list[dict], seeds: list[int]) -> dict:
    """Per method: the error of each seed's run, their mean, median and worst; the ordering per seed."""
    err = {m: {r["seed"]: r["rel_l2_mean"] for r in rows if r["method"] == m} for m in NAMES}
    methods = [m for m in NAMES if err[m]]
    stats = {m: {"per_seed": err[m], "mean": float(np.mean(list(err[m].values()))),
                 "median": float(np.median(list(err[m].values()))), "worst": float(max(err[m].values()))}
             for m in methods}
    order = [m for m in ("moe", "hc", "sc") if m in methods]  # the paper's ordering: moe < hc < sc

    def ordered_by(value) -> bool:
        return all(value(x) < value(y) for x, y in zip(order, order[1:]))

    ordered = {s: ordered_by(lambda m: err[m][s]) for s in seeds}
    lines = ["| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | median | worst |",
             "|---|" + "---|" * (len(seeds) + 3)]
    for m in methods:
        st = stats[m]
        lines.append(f"| {NAMES[m]} | " + " | ".join(f"{100 * err[m][s]:.2f}%" for s in seeds)
                     + f" | {100 * st['mean']:.2f}% | {100 * st['median']:.2f}% | {100 * st['worst']:.2f}% |")
    lines.append(f"| {' < '.join(NAMES[m] for m in order)} | "
                 + " | ".join("yes" if ordered[s] else "no" for s in seeds) + " | "
                 + " | ".join("yes" if ordered_by(lambda m: stats[m][k]) else "no"
                              for k in ("mean", "median", "worst")) + " |")
    return {"methods": stats, "ordered_per_seed": ordered, "markdown": "\n".join(lines)}


def _reused(path: Path, steps: int) -> dict | None:
    """A finished run's evaluation JSON, if it scored the final step (a rerun then costs no compute)."""
    if not path.is_file():
        return None
    ev = json.loads(path.read_text())
    return ev if ev.get("step") == steps else None


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc.training import (CHECKPOINT, evaluate, load_config, prepare_data, read_checkpoint_meta, train,
                               write_report)
    from pihc.training.config import config_changes, config_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=[f"diffusion-sorption/{m}-small" for m in ("sc", "hc", "moe")])
    p.add_argument("--set", action="append", default=[], help="override applied to every config")
    p.add_argument("--small", action="store_true",
                   help="tiny models trained for two steps on an 11 x 64 grid (8 generated samples): a quick"
                        " check that it runs")
    p.add_argument("--out-dir", default=None, help="run directories (default runs/accuracy[-tiny])")
    p.add_argument("--json", default=None, help="JSON file (default benchmarks/out/accuracy[_tiny].json)")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train every config once per seed (run directories NAME-sS)")
    p.add_argument("--also-grid", action="append", default=[], metavar="NTxNX[xNY][:DATA]",
                   help="also score every run on this grid (and data file); repeatable")
    p.add_argument("--floor-samples", type=int, default=8,
                   help="held-out samples for the discretisation floor (0: skip it)")
    a = p.parse_args(argv)
    # Finished runs in --out-dir are reused, so the tiny ones live apart from the real ones.
    a.out_dir = a.out_dir or ("runs/accuracy-tiny" if a.small else "runs/accuracy")
    a.json = a.json or f"benchmarks/out/accuracy{'_tiny' if a.small else ''}.json"
    overrides = (SMALL if a.small else []) + a.set

    rows = []
    jobs = [(name, None) for name in a.configs] if a.seeds is None else \
        [(name, seed) for seed in a.seeds for name in a.configs]
    # Every job's config, and what its run directory holds, is checked before the first one trains.
    planned = []
    for name, seed in jobs:
        cfg = load_config(name, overrides + ([] if seed is None else [f"run.seed={seed}"]))
        run = Path(a.out_dir) / (Path(name).name + ("" if seed is None else f"-s{seed}"))
        if (run / "config.yaml").is_file():  # a finished run is reused only if it is this config's
            changes = config_changes(config_json(load_config(run / "config.yaml")), config_json(cfg))
            if changes:
                shown = "; ".join(f"{k}: {x!r} there, {y!r} here" for k, x, y in changes[:4])
                raise SystemExit(f"error: {run} holds a run of another config than {name} ({shown}); remove it"
                                 " or give another --out-dir")
        planned.append((name, cfg, run))
    for name, cfg, run in planned:
        t0 = time.perf_counter()
        done = (run / CHECKPOINT).exists() and read_checkpoint_meta(run / CHECKPOINT)["step"] >= cfg.optim.steps
        if not done:
            train(cfg, run, resume=(run / CHECKPOINT).exists())
        train_s = time.perf_counter() - t0
        ev = _reused(run / "evaluation.json", cfg.optim.steps) if done else None
        if ev is None:
            ev = evaluate(run)
            write_report(run)
        other = {}
        for spec in a.also_grid:
            shape, _, path = spec.partition(":")
            ev2 = _reused(run / f"evaluation-{shape}.json", cfg.optim.steps) if done else None
            if ev2 is None:
                ev2 = evaluate(run, grid=tuple(int(n) for n in shape.split("x")), data_path=path or None,
                               plots=False)
            other[shape] = {"rel_l2_mean": ev2["rel_l2_mean"], "rel_l2_std": ev2["rel_l2_std"],
                            "samples": ev2["samples"], "data": ev2["data"]}
        metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
        rows.append({"config": name, "method": cfg.model.method, "seed": cfg.run.seed, "run": str(run),
                     "steps": ev["step"],
                     "rel_l2_mean": ev["rel_l2_mean"], "rel_l2_std": ev["rel_l2_std"],
                     "residual_pde": ev["residual"]["pde"], "samples": ev["samples"],
                     "train_wall_s": sum(m["step_time_s"] for m in metrics),
                     "median_step_s": float(np.median([m["step_time_s"] for m in metrics[1:]] or [0])),
                     "failed_solves": int(sum(m.get("failed_solves", 0) for m in metrics)),
                     "this_call_s": train_s, "other_grids": other})
    cfg0 = load_config(a.configs[0], overrides)
    floor = floor_on_samples(cfg0, prepare_data(cfg0), a.floor_samples) if a.floor_samples > 0 else None
    shape = " x ".join(map(str, cfg0.data.shape))
    out = {"rows": rows, "floor": floor, "grid": list(cfg0.data.shape)}
    paper = PAPER.get(cfg0.problem, {})
    extra = [spec.partition(":")[0] for spec in a.also_grid]
    lines = ["| method | config | seed | steps | rel. L2 error (mean +- std) | " + "".join(f"on {g} | " for g in extra)
             + "paper | PDE residual (MSE) | train time | failed solves |",
             "|---|---|---|---|---|" + "---|" * len(extra) + "---|---|---|---|"]
    for r in rows:
        lines.append(f"| {NAMES[r['method']]} | `{r['config']}` | {r['seed']} | {r['steps']} | {100 * r['rel_l2_mean']:.2f}% +- "
                     f"{100 * r['rel_l2_std']:.2f}% | "
                     + "".join(f"{100 * r['other_grids'][g]['rel_l2_mean']:.2f}% | " for g in extra)
                     + f"{paper.get(r['method'], '-')} | {r['residual_pde']:.3g} |"
                     f" {r['train_wall_s'] / 60:.1f} min | {r['failed_solves']} |")
    if floor is not None:
        lines.append(f"| discretisation floor | grid {shape} | - | - | {100 * floor['rel_l2_mean']:.2f}%"
                     f" +- {100 * floor['rel_l2_std']:.2f}% | " + "- | " * len(extra) + "- | - | - | - |")
    if a.seeds is not None:
        out["seeds"] = seed_summary(rows, a.seeds)
        lines += ["", out["seeds"]["markdown"]]
    out["markdown"] = "\n".join(lines)
    print(out["markdown"])
    save(a.json, out)
    if a.markdown:
        from pihc.files import atomic_write_text

        atomic_write_text(a.markdown, out["markdown"] + "\n")
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
