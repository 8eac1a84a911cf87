"""Where a PI-HC-MoE training step spends its time, and the kernels chosen for it.

Two parts, measured in one process:

1. **Profile** of one jitted training step (``jax.profiler`` trace), each
   XLA kernel attributed to the named scope it came from
   (``pihc.backbone``, ``pihc.constraint.problems`` / ``.solve`` /
   ``.assemble``, ``pihc.loss``), forward and backward apart.
2. **Comparisons** of the formulations the constraint layer uses against the
   straightforward ones they replaced, each forward + backward (or forward
   where there is no backward), median of interleaved repeats:

   * sampling: float32 scores over each expert's own domain points and a
     threshold search for the largest (the same points as ``top_k``),
     against ``top_k`` on those scores and on float64 scores over the whole
     grid;
   * ``diff2_ghost``: edge and interior rows joined, against the stencil on
     the array padded with its ghosts;
   * ``linearise``'s basis columns: the column-at-a-time transpose
     (``_columns``), against plain ``vmap`` autodiff;
   * the implicit backward's exact Hessian, ``Phi^T (M Phi)`` as one 2-D
     dot, against the einsum over (points, terms) it replaced;
   * the whole constraint layer with the solver's initial damping of the
     run's config, against the textbook 1e-3 (iterations per solve, time,
     and how far the weights and gradients move: the solutions agree to
     the solver's tolerance);

and the solver's iterations per solve with untrained parameters (two
initialisations) at both dampings.

    python benchmarks/step_profile.py --run runs/accuracy/moe-small --out benchmarks/out/step_profile.json
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

SCOPES = ("pihc.backbone", "pihc.constraint.problems", "pihc.constraint.solve",
          "pihc.constraint.assemble", "pihc.loss")


def _median_ms(fns: dict, repeats: int) -> dict:
    import jax

    for f, a in fns.values():
        jax.block_until_ready(f(*a))
    times = collections.defaultdict(list)
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        for name, (f, a) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*a))
            times[name].append(time.perf_counter() - t0)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def profile_step(step, args, repeats: int) -> dict:
    """Milliseconds per step in each named scope (forward / backward), from a profiler trace.

    ``step`` is an ``equinox.filter_jit`` function.
    """
    import jax

    compiled = step.lower(*args).compile()  # profile this executable, whose HLO we read
    step = compiled
    hlo = compiled.compiled.as_text()
    scope_of = {}
    for line in hlo.splitlines():
        m = re.match(r'\s*(?:ROOT )?%([^ ]+) = .*?op_name="([^"]+)"', line)
        if m:
            name = m.group(2)
            hit = [s for s in SCOPES if s in name]
            part = "backward" if "transpose(" in name else "forward"
            scope_of[m.group(1)] = f"{hit[0] if hit else 'other'} {part}"
    jax.block_until_ready(step(*args))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(repeats):
                jax.block_until_ready(step(*args))
        trace = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
        if not trace:
            raise RuntimeError("jax.profiler wrote no trace; is the profiler available?")
        events = json.load(gzip.open(trace[0]))["traceEvents"]
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e and e["name"] in scope_of:
            total[scope_of[e["name"]]] += e["dur"]
    # Kernel time summed over threads, so it can exceed the wall time.
    return {k: v / 1e3 / repeats for k, v in sorted(total.items())}


def comparisons(model, u0, keys, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from pihc.constraint import linearise
    from pihc.derivatives import _take, diff2_ghost

    con = model.constraint
    grid, pde = con.grid, con.pde
    basis = jax.jit(jax.vmap(model.basis))(u0)
    out = {}

    def sample_grid64(key):  # the former sampler
        dom = jnp.asarray(con.sampling_domains())
        scores = jnp.where(dom, jax.random.uniform(key, dom.shape, jnp.float64), -1.0)
        return jax.lax.top_k(scores, con.n_points)[1]

    def sample_top_k(key):  # the sampler before the threshold search: the same points, by score
        cand, valid = con._candidates()
        scores = jnp.where(valid, jax.random.uniform(key, cand.shape, jnp.float32), -1.0)
        return jnp.take_along_axis(jnp.asarray(cand), jax.lax.top_k(scores, con.n_points)[1], axis=1)

    same = bool(np.array_equal(np.sort(np.asarray(jax.vmap(sample_top_k)(keys)), axis=-1),
                               np.asarray(jax.vmap(con.sample)(keys))))
    out["sampling_ms"] = _median_ms({"float32 scores over own domain, threshold search (used)":
                                     (jax.jit(jax.vmap(con.sample)), (keys,)),
                                     "float32 scores over own domain, top_k": (jax.jit(jax.vmap(sample_top_k)), (keys,)),
                                     "float64 scores over the grid, top_k": (jax.jit(jax.vmap(sample_grid64)), (keys,))},
                                    repeats)
    out["sampling_same_points_as_top_k"] = same

    def padded(u, axis, h, lo, hi):  # the former diff2_ghost
        lo, hi = jnp.expand_dims(lo, axis), jnp.expand_dims(hi, axis)
        p = jnp.concatenate([lo, u, hi], axis=axis)
        return (_take(p, axis, 2) - 2.0 * u + _take(p, axis, 0, -2)) / h ** 2

    dx = grid.spacing("x")
    cols = jnp.moveaxis(basis.astype(jnp.float64), -1, 1)  # (batch, N, nt, nx)

    def d2_loss(op):
        def f(u):
            lo, hi = pde.ghosts(u, dx)
            return jnp.sum(op(u, u.ndim - 1, dx, lo, hi) ** 2)
        return jax.jit(jax.grad(f))

    out["diff2_ghost_fwd_bwd_ms"] = _median_ms({"edges and interior joined (used)": (d2_loss(diff2_ghost), (cols,)),
                                                "padded with the ghosts": (d2_loss(padded), (cols,))}, repeats)

    idx = jax.jit(jax.vmap(con.sample))(keys)
    probe = jax.random.normal(jax.random.key(1), (u0.shape[0],) + idx.shape[1:] + (len(pde.term_names), basis.shape[-1]))

    def lin_loss(b, pts):
        lin = jax.vmap(lambda b, a, p: linearise(pde, b.astype(jnp.float64), a, grid, con.initial, points=p))(b, u0, pts)
        return jnp.sum(lin["phi"] * probe) + jnp.sum(lin["ic"] ** 2) + jnp.sum(lin["bc"] ** 2)

    def plain_loss(b, pts):  # the former: vmap over the columns, autodiff's transpose
        def one(b, a, p):
            def f(u):
                t = pde.terms(u, grid).reshape(-1, len(pde.term_names))[p]
                return t, pde.initial_rows(u, a, grid), pde.boundary_rows(u, grid)
            return jax.vmap(f, in_axes=-1, out_axes=-1)(b.astype(jnp.float64))
        phi, ic, bc = jax.vmap(one)(b, u0, pts)
        return jnp.sum(phi * probe) + jnp.sum(ic ** 2) + jnp.sum(bc ** 2)

    probe_u = jax.random.normal(jax.random.key(2), basis.shape[:-1], jnp.float64)
    layers = {f"damping {con.damping:g} (used)": con, "damping 0.001": dataclasses.replace(con, damping=1e-3)}

    def layer_grad(c):
        def loss(b):
            sol = jax.vmap(c)(b, u0, keys)
            return jnp.sum(sol.u * probe_u), sol
        return jax.jit(jax.grad(loss, has_aux=True))

    grads = {k: layer_grad(c) for k, c in layers.items()}
    res = {k: g(basis) for k, g in grads.items()}
    (g_used, s_used), (g_old, s_old) = res.values()
    out["constraint_layer"] = {
        "fwd_bwd_ms": _median_ms({k: (g, (basis,)) for k, g in grads.items()}, repeats),
        "solver_steps_mean": {k: float(r[1].solution.num_steps.mean()) for k, r in res.items()},
        "solver_steps_max": {k: int(r[1].solution.num_steps.max()) for k, r in res.items()},
        "weights_max_rel_diff": float(jnp.max(jnp.abs(s_used.weights - s_old.weights)) / jnp.max(jnp.abs(s_old.weights))),
        "grad_max_rel_diff": float(jnp.max(jnp.abs(g_used - g_old)) / jnp.max(jnp.abs(g_old))),
        "rtol": con.rtol}
    # The implicit backward's exact Hessian (one per sample and expert) at the solved weights.
    from pihc.constraint import _ARG_AXES
    args = jax.jit(jax.vmap(lambda b, a, k: con.problems(b, a, k)[0]))(basis, u0, keys)

    def hessian_einsum(w, a):  # the former: Phi^T (M Phi) as an einsum over (points, terms)
        P = con._curvature_product(w, a)
        return con._scales(a)[0] ** 2 * jnp.einsum("mtn,mtk->nk", a["phi"], P) + a["rows_A"]

    def per_expert(h):
        return jax.jit(jax.vmap(jax.vmap(lambda w, a: h(w, dict(a, **con._rows_gram(a))), in_axes=(0, _ARG_AXES))))

    hess = {"Phi^T P as one 2-D dot (used)": per_expert(con.hessian), "einsum mtn,mtk->nk": per_expert(hessian_einsum)}
    h_used, h_old = (h(s_used.weights, args) for h in hess.values())
    out["hessian"] = {"ms": _median_ms({k: (h, (s_used.weights, args)) for k, h in hess.items()}, repeats),
                      "max_rel_diff": float(jnp.max(jnp.abs(h_used - h_old)) / jnp.max(jnp.abs(h_old)))}
    out["linearise_fwd_bwd_ms"] = _median_ms(
        {"column-at-a-time transpose (used)": (jax.jit(jax.grad(lin_loss)), (basis, idx)),
         "vmap, autodiff transpose": (jax.jit(jax.grad(plain_loss)), (basis, idx))}, repeats)
    return out


def untrained_solver_steps(cfg, data, u0, keys, seeds=(0, 1)) -> dict:
    """LM iterations per solve with untrained parameters, at the run's damping and at 1e-3."""
    import jax

    from pihc.training.trainer import build_model

    out = {}
    for s in seeds:
        m = build_model(cfg, data.pde, data.grid, jax.random.key(s))
        basis = jax.jit(jax.vmap(m.basis))(u0)
        for d in (m.constraint.damping, 1e-3):
            c = dataclasses.replace(m.constraint, damping=d)
            sol = jax.jit(jax.vmap(c))(basis, u0, keys).solution
            out[f"init key {s}, damping {d:g}"] = {"mean": float(sol.num_steps.mean()),
                                                    "max": int(sol.num_steps.max()),
                                                    "failed": int((sol.status != 0).sum())}
    return out


def main(argv=None) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc.training.config import load_config
    from pihc.training.trainer import (build_model, load_initial, load_run, make_optimizer, make_step,
                                       prepare_data)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained PI-HC / PI-HC-MoE run directory (its parameters and config)")
    p.add_argument("--config", default="diffusion-sorption/moe-small", help="used when --run is not given")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default="benchmarks/out/step_profile.json")
    a = p.parse_args(argv)

    if a.run:
        cfg, data, model, _ = load_run(a.run, log=lambda s: None)
    else:
        cfg = load_config(a.config, [])
        data = prepare_data(cfg)
        model = build_model(cfg, data.pde, data.grid, jax.random.key(1))
    if cfg.model.method not in ("hc", "moe"):
        raise SystemExit(f"error: step_profile needs a hard-constrained model, got method {cfg.model.method!r}")
    u0 = jnp.asarray(load_initial(cfg, data, data.train_idx[: cfg.optim.batch]))
    keys = jax.random.split(jax.random.key(0), cfg.optim.batch)
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(cfg, opt, data.pde, data.grid)
    args = (model, state, u0, keys)
    out = {"run": a.run, "config": None if a.run else a.config,
           "method": cfg.model.method, "batch": cfg.optim.batch, "grid": list(data.grid.shape),
           "step_ms": _median_ms({"step": (step, args)}, a.repeats)["step"],
           "profile_ms": profile_step(step, args, a.repeats),
           "comparisons": comparisons(model, u0, keys, a.repeats),
           "untrained_solver_steps": untrained_solver_steps(cfg, data, u0, keys)}
    print(json.dumps(out, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
