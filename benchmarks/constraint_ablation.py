"""What the solver's PDE rows contribute to a trained PI-HC / PI-HC-MoE model.

The hard-constraint layer picks each expert's weights from the PDE rows at
its sampled points *and* the initial/boundary rows.  This benchmark takes a
trained run, keeps its basis (the network's output on held-out initial
conditions) and its sampled points, and re-solves the constraint with the
solver's PDE weight multiplied by each of ``--factors``.  Factor 0 leaves the
initial/boundary rows and the ridge alone: a linear projection of the basis
onto the data, no PDE at all.  For each factor it reports

* the relative L2 error against the numerical solution (mean, std),
* the full-grid PDE residual of the prediction (mean square, the loss's units),
* how far the weights moved from those at factor 1 (relative norm),
* the spread of the experts' weights (relative to their mean; 0 means every
  expert picked the same weights, i.e. the mixture acts as one global fit),
* the solver's iterations and failed solves.

If the error at factor 0 equals the error at factor 1, the trained model's
accuracy comes from its basis and the initial/boundary rows, not from
solving the PDE at prediction time.

    python benchmarks/constraint_ablation.py --run runs/accuracy/moe-small \\
        --factors 0 0.1 1 10 100 --out benchmarks/out/constraint_ablation.json
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from _record import save


def with_pde_weight(constraint, factor: float):
    """``constraint`` with its solver PDE weight multiplied by ``factor`` (0: rows and ridge only)."""
    w = constraint.row_weights
    return dataclasses.replace(constraint, row_weights=dataclasses.replace(w, pde=w.pde * factor))


def solve_on_basis(constraint, basis, u0, seed: int = 0, chunk: int = 8):
    """The constraint layer on a fixed basis, with the points ``pihc evaluate`` samples (the solver keys
    of :func:`pihc.training.map_chunks`), so factor 1 reproduces its predictions."""
    import jax

    from pihc.training import map_chunks

    return map_chunks(jax.jit(jax.vmap(constraint)), (basis, u0), seed, chunk)


def ablate(run: str, factors, n_samples: int | None = None) -> dict:
    """The table above for one run (a dict, one entry per factor)."""
    import jax
    import jax.numpy as jnp

    from pihc import physics_loss
    from pihc.training import load_fields, load_run, weights_spread

    cfg, data, model, meta = load_run(run, log=lambda s: None)
    con = getattr(model, "constraint", None)
    if con is None:
        raise SystemExit(f"error: {run} is a {cfg.model.method!r} run; the ablation needs a hard-constrained"
                         " one (hc or moe)")
    if any(f < 0 for f in factors):
        raise SystemExit(f"error: --factors must be >= 0, got {list(factors)}")
    idx = data.test_idx if n_samples is None else data.test_idx[:n_samples]
    truth = load_fields(cfg, data, idx)
    u0 = truth[:, 0]
    grid, pde = data.grid, data.pde
    basis = jax.jit(jax.vmap(model.basis))(jnp.asarray(u0))  # one basis for every factor
    loss_parts = jax.jit(jax.vmap(lambda v, a: physics_loss(pde, v, a, grid)[1]))
    ref = solve_on_basis(con, basis, u0, cfg.run.seed)
    rows = []
    for f in factors:
        out = ref if f == 1.0 else solve_on_basis(with_pde_weight(con, f), basis, u0, cfg.run.seed)
        u, w = np.asarray(out.u), np.asarray(out.weights)  # (S, *grid), (S, K, N)
        axes = tuple(range(1, u.ndim))
        rel = np.sqrt(((u - truth) ** 2).sum(axes)) / np.sqrt((truth ** 2).sum(axes))
        dw = np.linalg.norm(w - ref.weights, axis=-1) / np.linalg.norm(ref.weights, axis=-1)
        parts = loss_parts(jnp.asarray(u), jnp.asarray(u0))
        sol = out.solution
        rows.append({
            "factor": float(f), "solver_pde_weight": float(con.row_weights.pde * f),
            "rel_l2_mean": float(rel.mean()), "rel_l2_std": float(rel.std()),
            "pde_residual_ms": float(np.mean(parts["pde"])),
            "weights_change_rel": float(dw.mean()),
            "experts_spread_rel": weights_spread(w),
            "solver_steps_mean": float(np.asarray(sol.num_steps).mean()),
            "failed_solves": int(np.asarray(sol.status != 0).sum()),
        })
    return {"run": str(run), "step": meta["step"], "method": cfg.model.method, "experts": int(ref.weights.shape[1]),
            "samples": int(len(idx)), "grid": list(grid.shape), "solver_pde_weight": con.row_weights.pde,
            "rows": rows}


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="RUN_DIR",
                   help="a trained hc or moe run (repeatable)")
    p.add_argument("--factors", type=float, nargs="+", default=[0.0, 0.1, 1.0, 10.0, 100.0],
                   help="multipliers of the run's solver PDE weight (0: initial/boundary rows only)")
    p.add_argument("--samples", type=int, default=None, help="held-out samples to use (default: all)")
    p.add_argument("--out", default="benchmarks/out/constraint_ablation.json")
    a = p.parse_args(argv)
    out = {"runs": [ablate(r, a.factors, a.samples) for r in a.run]}
    for r in out["runs"]:
        print(f"{r['run']} ({r['method']}, {r['experts']} experts, solver PDE weight {r['solver_pde_weight']}):")
        print("  factor   rel. L2            PDE residual   weights moved   experts' spread   LM iters")
        for x in r["rows"]:
            print(f"  {x['factor']:<7g}  {100 * x['rel_l2_mean']:6.2f}% +- {100 * x['rel_l2_std']:5.2f}%"
                  f"   {x['pde_residual_ms']:.3e}      {x['weights_change_rel']:.4f}          "
                  f"{x['experts_spread_rel']:.4f}            {x['solver_steps_mean']:.1f}")
    save(a.out, out)
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
