"""Cost of one training step: PI-HC-MoE and PI-HC against PI-SC, same backbone and batch.

Measured side by side in one process (interleaved repeats, median), so the
ratios are robust to the machine's load.  Prints and saves JSON.

    python benchmarks/step_cost.py --config diffusion-sorption/moe-small --repeats 5
    python benchmarks/step_cost.py --config diffusion-sorption/moe --repeats 3 \
        --set data.path=data/ds-step-cost.h5 --set data.generate.samples=16 \
        --set data.train_samples=8 --set data.test_samples=8   # the paper's 1024 x 101 setting
    python benchmarks/step_cost.py --small --repeats 2   # quick check: a tiny model on generated data
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from _record import save

# --small: a tiny grid, dataset and network (the data file is generated when missing).
SMALL = ["data.path=benchmarks/out/diffusion-sorption-tiny.h5", "data.generate.samples=8",
         "data.generate.nt=11", "data.generate.nx=64", "data.nt=11", "data.nx=64", "data.train_samples=4",
         "data.test_samples=4", "model.width=8", "model.modes=[3,4]", "model.layers=2", "model.n_basis=4",
         "constraint.n_points=40", "optim.batch=2"]


def main(argv=None) -> dict:
    import jax
    import jax.numpy as jnp
    import equinox as eqx

    jax.config.update("jax_enable_x64", True)
    from pihc.training import build_model, load_config, load_initial, make_optimizer, make_step, prepare_data
    from pihc.training.model import read_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="diffusion-sorption/moe-small")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set data.generate.samples=16 (repeatable)")
    p.add_argument("--small", action="store_true",
                   help="a tiny model on an 11 x 64 grid (8 generated samples): a quick check that it runs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trained", action="append", default=[], metavar="METHOD=RUN_DIR",
                   help="time METHOD (sc, hc or moe) as a trained run: its parameters and its settings, with"
                        " the --set options on top, so the solver's iteration counts are those of training"
                        " rather than of an untrained basis (repeatable)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/out/step_cost[_tiny].json)")
    a = p.parse_args(argv)
    a.out = a.out or f"benchmarks/out/step_cost{'_tiny' if a.small else ''}.json"
    overrides = (SMALL if a.small else []) + a.set
    trained = dict(item.split("=", 1) for item in a.trained)
    unknown = set(trained) - {"sc", "hc", "moe"}
    if unknown:
        raise SystemExit(f"error: --trained takes sc=, hc= or moe=, got {sorted(unknown)}")

    base = load_config(a.config, overrides)
    data = prepare_data(base)
    u0 = jnp.asarray(load_initial(base, data, data.train_idx[: base.optim.batch]))
    keys = jax.random.split(jax.random.key(0), base.optim.batch)
    runs = {}
    for method in ("sc", "hc", "moe"):
        cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, method=method))
        if method == "hc":  # one solve over the whole grid, whatever the MoE config's time slabs
            cfg = dataclasses.replace(cfg, constraint=dataclasses.replace(cfg.constraint, time_slabs=1))
        if method in trained:
            # The run's own settings with this command's --set options on top (its layer as trained,
            # or as --set changes it), on this config's grid and samples.
            cfg = load_config(Path(trained[method]) / "config.yaml", overrides)
            if cfg.model.method != method or cfg.data.shape != base.data.shape:
                raise SystemExit(f"error: {trained[method]} trained {cfg.model.method!r} on {cfg.data.shape}; give"
                                 f" a {method!r} run on {base.data.shape} for --trained {method}=")
        model = build_model(cfg, data.pde, data.grid, jax.random.key(1))
        if method in trained:
            # Only the backbone is read: the run's own config and checkpoint, no data of its own.
            run_cfg = load_config(Path(trained[method]) / "config.yaml")
            backbone = read_model(run_cfg, data.pde, data.grid, trained[method])[0].backbone
            model = eqx.tree_at(lambda m: m.backbone, model, backbone)
        opt = make_optimizer(cfg)
        state = opt.init(eqx.filter(model, eqx.is_inexact_array))
        step = make_step(cfg, opt, data.pde, data.grid)
        t0 = time.perf_counter()
        _, _, aux = jax.block_until_ready(step(model, state, u0, keys))
        layer = getattr(model, "constraint", None)  # the layer timed: the config's
        runs[method] = dict(step=step, model=model, state=state, compile_s=time.perf_counter() - t0, times=[],
                            solver_steps_mean=float(aux["solver_steps_mean"]),
                            solver_steps_max=int(aux["solver_steps_max"]),
                            layer=None if layer is None else {
                                "splits": list(layer.splits), "n_points": layer.n_points,
                                "time_slabs": layer.time_slabs, "expert_loop": layer.expert_loop})
    for _ in range(a.repeats):  # interleaved, so load changes hit all methods alike
        for method, r in runs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(r["step"](r["model"], r["state"], u0, keys))
            r["times"].append(time.perf_counter() - t0)
    out = {"config": a.config, "overrides": overrides, "batch": base.optim.batch, "grid": list(data.grid.shape),
           "repeats": a.repeats, "trained": trained, "methods": {}}
    for method, r in runs.items():
        out["methods"][method] = {"median_s": float(np.median(r["times"])), "times_s": r["times"],
                                  "compile_s": r["compile_s"], "solver_steps_mean": r["solver_steps_mean"],
                                  "solver_steps_max": r["solver_steps_max"], "layer": r["layer"]}
    sc = out["methods"]["sc"]["median_s"]
    out["ratio_moe_over_sc"] = out["methods"]["moe"]["median_s"] / sc
    out["ratio_hc_over_sc"] = out["methods"]["hc"]["median_s"] / sc
    print(json.dumps({k: v for k, v in out.items() if k != "methods"}
                     | {m: v["median_s"] for m, v in out["methods"].items()}, indent=2))
    save(a.out, out)
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
