"""Training-step and inference time against the number of sampled points: PI-HC against PI-HC-MoE.

The paper's speed figure: PI-HC-MoE over PI-HC per training batch, as the
number of sampled points m grows.  Three variants on one backbone and batch:

* ``hc``: PI-HC, one global solve on ``m`` points;
* ``moe``: PI-HC-MoE with ``m`` points per expert (K experts: K m points in all);
* ``moe_split``: PI-HC-MoE with ``m / K`` points per expert (m in all, as PI-HC).

For each m and variant: the median time of one training step (forward,
implicit backward, optimiser update; :func:`pihc.training.make_step`) and of
inference on the batch (the model's forward pass, compiled), with the
solver's iteration counts.  Repeats are interleaved over the variants of one
m, so the ratios are measured side by side.  A variant whose expert would
need more points than its block holds (points are sampled without
replacement) is skipped and recorded as such.  Untrained parameters (the
initial network of ``run.seed``) unless ``--trained`` names runs.

    python benchmarks/speed_points.py --config diffusion-sorption/moe --points 100 1000 10000 20000 100000 \
        --set data.path=data/ds-speed.h5 --set data.generate.samples=16 --set data.train_samples=8 \
        --set data.test_samples=8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from _record import save

VARIANTS = ("hc", "moe", "moe_split")


def variant_config(base, variant: str, m: int):
    """``base`` as ``variant`` with ``m`` sampled points (see the module docstring)."""
    k = math.prod(base.constraint.splits)
    method = "hc" if variant == "hc" else "moe"
    points = m // k if variant == "moe_split" else m
    return dataclasses.replace(base, model=dataclasses.replace(base.model, method=method),
                               constraint=dataclasses.replace(base.constraint, n_points=max(points, 1)))


def loglog_slope(ms, ts) -> float | None:
    """Least-squares slope of log t against log m (1: linear growth, 2: quadratic)."""
    ok = [(m, t) for m, t in zip(ms, ts) if t is not None]
    if len(ok) < 2:
        return None
    x, y = np.log([m for m, _ in ok]), np.log([t for _, t in ok])
    return float(np.polyfit(x, y, 1)[0])


def plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for ax, kind in zip(axs, ("train_s", "infer_s")):
        for v in VARIANTS:
            rows = [r for r in out["rows"] if r["variant"] == v and r.get(kind) is not None]
            ax.loglog([r["points"] for r in rows], [r[kind] for r in rows], "o-", label=v)
        ax.set_xlabel("sampled points m")
        ax.set_ylabel("seconds per batch")
        ax.set_title(("training step" if kind == "train_s" else "inference") + f" ({out['device']})")
        ax.legend()
    buf = path.with_suffix(".png.tmp")
    fig.savefig(buf, format="png", dpi=110)
    buf.replace(path)
    plt.close(fig)


def main(argv=None) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc.training import build_model, load_config, load_initial, load_run, make_optimizer, make_step, prepare_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="diffusion-sorption/moe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--points", type=float, nargs="+", default=[1e2, 1e3, 1e4, 2e4, 1e5])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trained", action="append", default=[], metavar="METHOD=RUN_DIR",
                   help="use the parameters of a trained run for hc or moe (repeatable)")
    p.add_argument("--out", default="benchmarks/out/speed_points.json")
    a = p.parse_args(argv)
    if a.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    points = [int(m) for m in a.points]
    if min(points) < 1:
        raise SystemExit("error: --points must be >= 1")
    trained = dict(item.split("=", 1) for item in a.trained)
    if set(trained) - {"hc", "moe"}:
        raise SystemExit(f"error: --trained takes hc= or moe=, got {sorted(trained)}")

    base = load_config(a.config, a.set)
    data = prepare_data(base)
    u0 = jnp.asarray(load_initial(base, data, data.train_idx[: base.optim.batch]))
    keys = jax.random.split(jax.random.key(0), base.optim.batch)
    trained_models = {m: load_run(d)[2] for m, d in trained.items()}
    device = f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    rows = []
    path = Path(a.out)

    def checkpoint() -> dict:
        """Write the JSON (atomically) with the rows so far: an interrupted sweep keeps its finished points."""
        out = {"config": a.config, "overrides": a.set, "device": device, "jax": jax.__version__,
               "batch": base.optim.batch, "grid": list(data.grid.shape), "repeats": a.repeats, "trained": trained,
               "rows": rows,
               "loglog_slope": {v: {kind: loglog_slope([r["points"] for r in rows if r["variant"] == v],
                                                       [r.get(kind) for r in rows if r["variant"] == v])
                                    for kind in ("train_s", "infer_s")} for v in VARIANTS}}
        return save(path, out)

    for m in points:
        runs = {}
        for v in VARIANTS:
            cfg = variant_config(base, v, m)
            row = {"points": m, "variant": v, "points_per_expert": cfg.constraint.n_points,
                   "experts": 1 if v == "hc" else math.prod(cfg.constraint.splits)}
            rows.append(row)
            try:
                model = build_model(cfg, data.pde, data.grid, jax.random.key(cfg.run.seed + 1))
            except ValueError as err:  # more points than an expert's block holds
                row["skipped"] = str(err)
                continue
            src = trained_models.get(cfg.model.method)
            if src is not None:
                model = eqx.tree_at(lambda t: t.backbone, model, src.backbone)
            opt = make_optimizer(cfg)
            state = opt.init(eqx.filter(model, eqx.is_inexact_array))
            step = make_step(cfg, opt, data.pde, data.grid)
            infer = jax.jit(jax.vmap(lambda x, k, model=model: model(x, k).u))
            t0 = time.perf_counter()
            _, _, aux = jax.block_until_ready(step(model, state, u0, keys))
            jax.block_until_ready(infer(u0, keys))
            row.update(compile_s=time.perf_counter() - t0, solver_steps_mean=float(aux["solver_steps_mean"]),
                       solver_steps_max=int(aux["solver_steps_max"]), failed_solves=int(aux["failed_solves"]))
            runs[v] = (step, infer, model, state, row, [], [])
        for _ in range(a.repeats):  # interleaved: a change of load hits every variant alike
            for step, infer, model, state, row, tr, inf in runs.values():
                t0 = time.perf_counter()
                jax.block_until_ready(step(model, state, u0, keys))
                tr.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                jax.block_until_ready(infer(u0, keys))
                inf.append(time.perf_counter() - t0)
        for step, infer, model, state, row, tr, inf in runs.values():
            row.update(train_s=float(np.median(tr)), infer_s=float(np.median(inf)), train_times_s=tr,
                       infer_times_s=inf)
        by = {r["variant"]: r for r in rows if r["points"] == m}
        for v in ("moe", "moe_split"):
            for kind in ("train_s", "infer_s"):
                if by[v].get(kind) and by["hc"].get(kind):
                    by[v][f"speedup_over_hc_{kind[:-2]}"] = by["hc"][kind] / by[v][kind]
        print(json.dumps({v: {k: r.get(k) for k in ("train_s", "infer_s", "solver_steps_mean", "skipped")}
                          for v, r in by.items()} | {"points": m}), flush=True)
        out = checkpoint()
    print(json.dumps({"loglog_slope": out["loglog_slope"]}, indent=1))
    plot(out, path.with_suffix(".png"))
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
