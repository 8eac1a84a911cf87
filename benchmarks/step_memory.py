"""Peak memory of one training step of PI-SC, PI-HC and PI-HC-MoE.

Each method runs in its own process (a process's peak resident set only
grows, so methods sharing one would hide each other): it builds the
config's model and optimiser, loads one batch, runs the jitted step twice
(compile, then a measured step) and reports

* ``peak_rss_gb``: the process's peak resident set (``ru_maxrss``), which
  on the CPU holds everything: Python, JAX, the data, XLA's buffers;
* ``baseline_rss_gb``: the same just before the first step (model, data);
* ``xla_temp_gb`` / ``xla_argument_gb``: XLA's own account of the compiled
  step (``memory_analysis``): its temporaries and its inputs;
* on a GPU, ``device_peak_gb``: the allocator's ``peak_bytes_in_use``.

    python benchmarks/step_memory.py --config navier-stokes/moe --batch 1 \\
        --set data.path=data/ns-memory.h5 --set data.generate.samples=4 \\
        --set data.train_samples=2 --set data.test_samples=2
    python benchmarks/step_memory.py --small     # quick check: a tiny model on generated data
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _record import save

SMALL = ["data.path=benchmarks/out/diffusion-sorption-tiny.h5", "data.generate.samples=8",
         "data.generate.nt=11", "data.generate.nx=64", "data.nt=11", "data.nx=64", "data.train_samples=4",
         "data.test_samples=4", "model.width=8", "model.modes=[3,4]", "model.layers=2", "model.n_basis=4",
         "constraint.n_points=40"]
GB = 1024 ** 3


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # Linux: kilobytes


def child(config: str, overrides: list[str], method: str, batch: int) -> dict:
    """One method's step in this process; returns its memory figures."""

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc.training import build_model, load_config, load_initial, make_optimizer, make_step, prepare_data

    cfg = load_config(config, overrides + [f"model.method={method}", f"optim.batch={batch}"])
    data = prepare_data(cfg, lambda s: None)
    u0 = jnp.asarray(load_initial(cfg, data, data.train_idx[:batch]))
    keys = jax.random.split(jax.random.key(0), batch)
    model = build_model(cfg, data.pde, data.grid, jax.random.key(1))
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(cfg, opt, data.pde, data.grid)
    baseline = _rss_gb()
    out = {"method": method, "grid": list(data.grid.shape), "batch": batch, "backend": jax.default_backend(),
           "baseline_rss_gb": baseline}
    try:  # XLA's account of the compiled step, where the jit wrapper exposes it
        compiled = step.lower(model, state, u0, keys).compile()
        mem = getattr(compiled, "compiled", compiled).memory_analysis()  # equinox wraps the jax object
        out["xla_temp_gb"] = mem.temp_size_in_bytes / GB
        out["xla_argument_gb"] = mem.argument_size_in_bytes / GB
    except Exception as err:  # noqa: BLE001 - the figure is optional, the measured peak is not
        out["xla_memory_analysis"] = f"unavailable: {type(err).__name__}"
    t0 = time.perf_counter()
    model2, state2, aux = jax.block_until_ready(step(model, state, u0, keys))
    out["first_step_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, aux = jax.block_until_ready(step(model2, state2, u0, keys))
    out["step_s"] = time.perf_counter() - t0
    out["loss_finite"] = bool(jnp.isfinite(aux["loss"]))
    out["peak_rss_gb"] = _rss_gb()
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_gb"] = stats["peak_bytes_in_use"] / GB
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="navier-stokes/moe")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set data.generate.samples=4 (repeatable)")
    p.add_argument("--methods", nargs="+", default=["sc", "hc", "moe"], choices=["sc", "hc", "moe"])
    p.add_argument("--batch", type=int, default=1, help="samples per step")
    p.add_argument("--small", action="store_true", help="a tiny model on an 11 x 64 grid: a quick check")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/out/step_memory[_tiny].json)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    overrides = (SMALL if a.small else []) + a.set
    config = "diffusion-sorption/moe-small" if a.small else a.config
    if a.child:
        print(json.dumps(child(config, overrides, a.child, a.batch)))
        return {}
    a.out = a.out or f"benchmarks/out/step_memory{'_tiny' if a.small else ''}.json"
    from pihc.training import load_config, prepare_data

    # Here, before any worker starts: bad input is refused in one line, and missing data is made once.
    prepare_data(load_config(config, overrides))
    rows = {}
    for method in a.methods:
        cmd = [sys.executable, __file__, "--config", config, "--batch", str(a.batch), "--child", method]
        for o in overrides:
            cmd += ["--set", o]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: the {method} step failed:\n{proc.stderr[-2000:]}")
        rows[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[method]))
    out = {"config": config, "overrides": overrides, "batch": a.batch, "methods": rows}
    save(a.out, out)
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
