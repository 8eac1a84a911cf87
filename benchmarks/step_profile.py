"""Where a PI-HC / PI-HC-MoE training step spends its time, part by part.

Measured in one process, each part forward and forward + backward, median of
interleaved repeats:

* the whole jitted training step (``pihc.training.make_step``);
* the backbone: the model's basis for the batch (the gradient with respect
  to the network's parameters);
* the constraint layer (``HardConstraint`` called on that basis; the
  gradient with respect to the basis), at the solver's initial damping of
  the run's config and at the textbook 1e-3, with the Levenberg-Marquardt
  iterations per solve and how far the weights and the gradients move
  between the two (they agree to the solver's tolerance);
* the physics loss of the constrained prediction, on the grid the training
  loss uses (``loss.coarsen``);
* the optimiser's update of the parameters (gradient clipping and Adam,
  ``make_optimizer``), whose cost grows with the backbone's parameter count
  and not with the grid;

and the solver's iterations per solve with untrained parameters (two
initialisations) at both dampings.  Each part is compiled on its own, so the
parts need not add up to the step: inside the step XLA fuses across them.

    python benchmarks/step_profile.py --run runs/accuracy/moe-small --out benchmarks/out/step_profile.json
    python benchmarks/step_profile.py --small --repeats 2   # quick check: a tiny model on generated data
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import time

import numpy as np

from _record import save

# --small: a tiny grid, dataset and network (the data file is generated when missing).
SMALL = ["data.path=benchmarks/out/diffusion-sorption-tiny.h5", "data.generate.samples=8",
         "data.generate.nt=11", "data.generate.nx=64", "data.nt=11", "data.nx=64", "data.train_samples=4",
         "data.test_samples=4", "model.width=8", "model.modes=[3,4]", "model.layers=2", "model.n_basis=4",
         "constraint.n_points=40", "optim.batch=2"]


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


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def parts(cfg, data, model, u0, keys, repeats: int) -> dict:
    """Forward and forward + backward milliseconds of the backbone, the constraint layer and the loss."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from pihc import LossWeights, physics_loss
    from pihc.training import loss_grid

    grid, pde = data.grid, data.pde
    con = model.constraint
    basis = jax.jit(jax.vmap(model.basis))(u0)

    # The backbone: the basis of the batch, and the gradient of <basis, probe> in the parameters.
    probe_b = jax.random.normal(jax.random.key(1), basis.shape, basis.dtype)
    backbone = {
        "forward": (eqx.filter_jit(lambda m, a: jax.vmap(m.basis)(a)), (model, u0)),
        "forward_backward": (eqx.filter_jit(eqx.filter_grad(
            lambda m, a: jnp.sum(jax.vmap(m.basis)(a) * probe_b))), (model, u0)),
    }

    # The constraint layer at the config's damping and at 1e-3; the gradient of <u, probe> in the basis.
    probe_u = jax.random.normal(jax.random.key(2), basis.shape[:-1], jnp.float64)
    layers = {f"damping {con.solver.damping:g} (config)": con,
              "damping 0.001": dataclasses.replace(con, solver=dataclasses.replace(con.solver, damping=1e-3))}

    def layer_grad(c):
        def loss(b, a, k):
            sol = jax.vmap(c)(b, a, k)
            return jnp.sum(sol.u * probe_u), sol
        return jax.jit(jax.grad(loss, has_aux=True))

    fwd = {k: jax.jit(jax.vmap(c)) for k, c in layers.items()}
    grads = {k: layer_grad(c) for k, c in layers.items()}
    res = {k: g(basis, u0, keys) for k, g in grads.items()}
    (g_cfg, s_cfg), (g_old, s_old) = res.values()
    layer = {
        "forward_ms": _median_ms({k: (f, (basis, u0, keys)) for k, f in fwd.items()}, repeats),
        "forward_backward_ms": _median_ms({k: (g, (basis, u0, keys)) for k, g in grads.items()}, repeats),
        "solver_steps_mean": {k: float(r[1].solution.num_steps.mean()) for k, r in res.items()},
        "solver_steps_max": {k: int(r[1].solution.num_steps.max()) for k, r in res.items()},
        "failed_solves": {k: int((~r[1].solution.converged).sum()) for k, r in res.items()},
        "weights_max_rel_diff": _rel_diff(s_cfg.weights, s_old.weights),
        "grad_max_rel_diff": _rel_diff(g_cfg, g_old),
        "rtol": con.solver.rtol,
    }

    # The loss, as the training step takes it (restricted to the loss grid when loss.coarsen is set).
    lgrid, factors = loss_grid(cfg, grid)
    weights = LossWeights(cfg.loss.pde, cfg.loss.initial, cfg.loss.boundary)

    def loss(u, a):
        if factors:
            u = jax.vmap(lambda v: grid.restrict(v, factors))(u)
            a = jax.vmap(lambda x: grid.restrict(x[None], factors)[0])(a)
        return jnp.mean(jax.vmap(lambda v, x: physics_loss(pde, v, x, lgrid, weights)[0])(u, a))

    u = s_cfg.u
    loss_ms = {"forward": (jax.jit(loss), (u, u0)), "forward_backward": (jax.jit(jax.grad(loss)), (u, u0))}
    return {"backbone_ms": _median_ms(backbone, repeats), "constraint_layer": layer,
            "loss_ms": _median_ms(loss_ms, repeats), "loss_grid": list(lgrid.shape)}


def untrained_solver_steps(cfg, data, u0, keys, seeds=(0, 1)) -> dict:
    """LM iterations per solve with untrained parameters, at the config's damping and at 1e-3."""
    import jax

    from pihc.training import build_model

    out = {}
    for s in seeds:
        m = build_model(cfg, data.pde, data.grid, jax.random.key(s))
        basis = jax.jit(jax.vmap(m.basis))(u0)
        for d in (m.constraint.solver.damping, 1e-3):
            c = dataclasses.replace(m.constraint, solver=dataclasses.replace(m.constraint.solver, damping=d))
            sol = jax.jit(jax.vmap(c))(basis, u0, keys).solution
            out[f"init key {s}, damping {d:g}"] = {"mean": float(sol.num_steps.mean()),
                                                    "max": int(sol.num_steps.max()),
                                                    "failed": int((~sol.converged).sum())}
    return out


def main(argv=None) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    from pihc.training import build_model, load_config, load_initial, load_run, make_optimizer, make_step, prepare_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained PI-HC / PI-HC-MoE run directory (its parameters and config)")
    p.add_argument("--config", default="diffusion-sorption/moe-small", help="used when --run is not given")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override of --config, e.g. --set optim.batch=2 (repeatable)")
    p.add_argument("--small", action="store_true",
                   help="a tiny model on an 11 x 64 grid (8 generated samples): a quick check that it runs")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/out/step_profile[_tiny].json)")
    a = p.parse_args(argv)
    a.out = a.out or f"benchmarks/out/step_profile{'_tiny' if a.small else ''}.json"
    if a.run and (a.set or a.small):
        raise SystemExit("error: --run uses the run's own config; drop --set/--small")

    overrides = (SMALL if a.small else []) + a.set
    if a.run:
        cfg, data, model, _ = load_run(a.run, log=lambda s: None)
    else:
        cfg = load_config(a.config, overrides)
        data = prepare_data(cfg, log=lambda s: None)
        model = build_model(cfg, data.pde, data.grid, jax.random.key(1))
    if cfg.model.method not in ("hc", "moe"):
        raise SystemExit(f"error: step_profile needs a hard-constrained model, got method {cfg.model.method!r}")
    u0 = jnp.asarray(load_initial(cfg, data, data.train_idx[: cfg.optim.batch]))
    keys = jax.random.split(jax.random.key(0), cfg.optim.batch)
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_step(cfg, opt, data.pde, data.grid)
    params = eqx.filter(model, eqx.is_inexact_array)
    grads = jax.tree.map(jnp.ones_like, params)  # the update's cost does not depend on the gradient's values

    def update(p, s, g):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    out = {"run": a.run, "config": None if a.run else a.config, "overrides": [] if a.run else overrides,
           "method": cfg.model.method, "batch": cfg.optim.batch, "grid": list(data.grid.shape),
           "repeats": a.repeats, "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
           "step_ms": _median_ms({"step": (step, (model, state, u0, keys))}, a.repeats)["step"],
           "optimizer_update_ms": _median_ms({"update": (eqx.filter_jit(update), (params, state, grads))},
                                             a.repeats)["update"],
           **parts(cfg, data, model, u0, keys, a.repeats),
           "untrained_solver_steps": untrained_solver_steps(cfg, data, u0, keys)}
    save(a.out, out, echo=True)
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
