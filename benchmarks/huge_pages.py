"""A training step with and without glibc's huge-page tunable, ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.

XLA's CPU runtime takes each large buffer from ``malloc``, which maps it
fresh at every execution of a compiled step; with 4 KiB pages the kernel
faults it in page by page.  With the tunable (glibc 2.35+, transparent
huge pages in ``madvise`` or ``always`` mode), ``malloc`` asks for 2 MiB
pages.  glibc reads the variable when a process starts, so it is set for
the worker processes here.  For each config, worker processes alternate
between the environment without the tunable and with it, ``--rounds``
times each.  A worker compiles the config's
training step (untrained parameters, the first batch of its data), runs it
``--steps`` times and reports the median step, the minor page faults per
step and the sum of the parameters' absolute values after one step (the two
settings must agree to the last digit).  Prints and saves JSON.

    python benchmarks/huge_pages.py --configs navier-stokes/moe-small navier-stokes/sc-small \
        --out docs/bench/huge_pages_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _record import save

TUNABLE = "glibc.malloc.hugetlb"


def worker(config: str, sets: list[str], steps: int) -> dict:
    import resource

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc.training import build_model, load_config, load_initial, make_optimizer, make_step, prepare_data

    cfg = load_config(config, sets)
    data = prepare_data(cfg, log=lambda s: None)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(1))
    u0 = jnp.asarray(load_initial(cfg, data, data.train_idx[: cfg.optim.batch]))
    keys = jax.random.split(jax.random.key(0), cfg.optim.batch)
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(cfg, opt, data.pde, data.grid)
    out = jax.block_until_ready(step(model, state, u0, keys))
    params = jax.tree.leaves(eqx.filter(out[0], eqx.is_inexact_array))
    checksum = float(sum(jnp.sum(jnp.abs(x).astype(jnp.float64)) for x in params))
    times = []
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(model, state, u0, keys))
        times.append(time.perf_counter() - t0)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / steps
    return {"median_step_s": float(np.median(times)), "minor_page_faults_per_step": faults,
            "parameters_abs_sum_after_one_step": checksum}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["navier-stokes/moe-small", "navier-stokes/sc-small"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    p.add_argument("--steps", type=int, default=15, help="timed steps per worker")
    p.add_argument("--rounds", type=int, default=3, help="workers per config and setting, alternating")
    p.add_argument("--out", default="benchmarks/out/huge_pages_step.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        spec = json.loads(a.worker)
        print("ROW " + json.dumps(worker(spec["config"], spec["sets"], spec["steps"])), flush=True)
        return {}
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith(TUNABLE)]
    if tunables:
        base["GLIBC_TUNABLES"] = ":".join(tunables)
    settings = {"4 KiB pages": base,
                "huge pages (glibc.malloc.hugetlb=1)": {**base, "GLIBC_TUNABLES": ":".join(tunables + [f"{TUNABLE}=1"])}}
    rows = {}
    for config in a.configs:
        runs = {name: [] for name in settings}
        for _ in range(a.rounds):
            for name, env in settings.items():
                spec = {"config": config, "sets": a.set, "steps": a.steps}
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                     capture_output=True, text=True, check=True, env=env)
                runs[name].append(json.loads(next(x for x in out.stdout.splitlines() if x.startswith("ROW "))[4:]))
        row = {name: {"median_step_s_per_worker": [r["median_step_s"] for r in rs],
                      "median_step_s": float(np.median([r["median_step_s"] for r in rs])),
                      "minor_page_faults_per_step": float(np.median([r["minor_page_faults_per_step"] for r in rs])),
                      "parameters_abs_sum_after_one_step": rs[0]["parameters_abs_sum_after_one_step"]}
               for name, rs in runs.items()}
        small, huge = (row[n]["median_step_s"] for n in settings)
        row["huge / 4 KiB"] = huge / small
        row["parameter_sums_equal"] = len({json.dumps(r["parameters_abs_sum_after_one_step"])
                                    for rs in runs.values() for r in rs}) == 1
        rows[config] = row
        print(json.dumps({config: {k: (v if not isinstance(v, dict) else v["median_step_s"]) for k, v in row.items()}}),
              flush=True)
    result = {"benchmark": "huge_pages",
              "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
              "steps": a.steps, "rounds": a.rounds, "overrides": a.set, "configs": rows}
    result = save(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
