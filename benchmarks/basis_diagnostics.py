"""What limits a trained PI-HC / PI-HC-MoE run: its basis's span, or the experts' solves.

For held-out samples of a trained run (any PDE), against the data:

* ``span_fit``: the relative L2 error of the best L2 fit of the truth in
  the span of the parametrised basis, ``min_w ||B w + offset - u||``: on
  the whole grid (one weight vector, PI-HC's freedom) and block by block
  (``--blocks``; one weight vector per block, PI-HC-MoE's freedom).  No
  residual-trained prediction in that span can be closer to the truth.
* ``prediction``: the constrained prediction's error, and the mean squared
  PDE residual of the prediction and of the truth on the grid.
* ``experts`` (runs with more than one expert): expert k's weights give a
  field on the whole grid; in block k, each PDE term of that field against
  the same term of the assembled prediction, and the assembled
  prediction's term against the truth's (relative L2 over the blocks).  A
  term that depends on the field beyond the block (a velocity from a
  stream function) is where an expert's own solve and the assembled field
  can disagree.

    python benchmarks/basis_diagnostics.py --run runs/ns-acc/moe-small-s0 --samples 8 \\
        --out docs/bench/ns_basis_diagnostics_moe.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from _record import save


def span_fit(B: np.ndarray, offset: np.ndarray, truth: np.ndarray, splits) -> float:
    """Relative L2 error of the truth's best L2 fit by ``B w + offset``, one ``w`` per block of ``splits``."""
    from pihc import partition

    Bk, ok, tk = (np.asarray(partition(a, splits)) for a in (B, offset, truth))
    fit = np.empty_like(tk)
    for k in range(tk.shape[0]):
        b = Bk[k].reshape(-1, B.shape[-1])
        w, *_ = np.linalg.lstsq(b, (tk[k] - ok[k]).ravel(), rcond=None)
        fit[k] = (b @ w).reshape(tk[k].shape) + ok[k]
    return float(np.linalg.norm(fit - tk) / np.linalg.norm(tk))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def diagnose(run: str, samples: int, blocks) -> dict:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc import partition
    from pihc.training import load_fields, load_run

    cfg, data, model, _ = load_run(run, lambda s: None)
    if not hasattr(model, "constraint"):
        raise SystemExit(f"error: {run} is a PI-SC run; the diagnostics need a basis (PI-HC or PI-HC-MoE)")
    layer, pde, grid = model.constraint, model.pde, model.grid
    if layer.time_slabs > 1:
        raise SystemExit(f"error: {run} solves {layer.time_slabs} time slabs in turn; the diagnostics take a"
                         " layer with one solve over all times (constraint.time_slabs: 1)")
    splits = tuple(layer.splits)
    blocks = tuple(blocks) if blocks else (splits if np.prod(splits) > 1 else None)
    idx = data.test_idx[:samples]
    truth = load_fields(cfg, data, idx)
    names = pde.term_names
    terms = jax.jit(lambda u: pde.terms(u, grid))
    residual = jax.jit(lambda u: pde.residual(pde.terms(u, grid)))
    domain = np.asarray(pde.residual_domain(grid))
    rows = []
    for i in range(len(idx)):
        u0, T = jnp.asarray(truth[i, 0]), np.asarray(truth[i], np.float64)
        basis = model.basis(u0).astype(jnp.float64)
        key = jax.random.key(int(idx[i]))
        out = layer(basis, u0, key)
        problem = layer.problem(basis, u0, key)  # u = B w + offset, as the layer has it (no terms formed)
        B, off = np.asarray(problem.B), np.asarray(problem.offset)
        u = np.asarray(out.u)
        row = {"sample": int(idx[i]), "prediction": _rel(u, T), "span_fit_global": span_fit(B, off, T, (1,) * grid.ndim),
               "residual_prediction": float(np.mean(np.asarray(residual(out.u))[domain] ** 2)),
               "residual_truth": float(np.mean(np.asarray(residual(jnp.asarray(T)))[domain] ** 2))}
        if blocks is not None:
            row["span_fit_blocks"] = span_fit(B, off, T, blocks)
        K = int(np.prod(splits))
        if K > 1:
            tu, tt = np.asarray(terms(out.u)), np.asarray(terms(jnp.asarray(T)))
            own = np.stack([np.asarray(partition(np.asarray(terms(jnp.asarray(B @ np.asarray(out.weights[k]) + off))),
                                                 splits))[k] for k in range(K)])
            tuk, ttk = np.asarray(partition(tu, splits)), np.asarray(partition(tt, splits))
            row["terms_expert_vs_assembled"] = {n: _rel(own[..., j], tuk[..., j]) for j, n in enumerate(names)}
            row["terms_assembled_vs_truth"] = {n: _rel(tuk[..., j], ttk[..., j]) for j, n in enumerate(names)}
        rows.append(row)

    def mean(key):
        vals = [r[key] for r in rows if key in r]
        if not vals:
            return None
        if isinstance(vals[0], dict):
            return {n: float(np.mean([v[n] for v in vals])) for n in vals[0]}
        return float(np.mean(vals))

    keys = ["prediction", "span_fit_global", "span_fit_blocks", "residual_prediction", "residual_truth",
            "terms_expert_vs_assembled", "terms_assembled_vs_truth"]
    means = {k: mean(k) for k in keys}
    return {"run": str(run), "method": cfg.model.method, "splits": list(splits),
            "blocks": None if blocks is None else list(blocks), "samples": len(rows),
            "mean": {k: v for k, v in means.items() if v is not None}, "per_sample": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained PI-HC or PI-HC-MoE run directory")
    p.add_argument("--samples", type=int, default=8, help="held-out samples (the first ones)")
    p.add_argument("--blocks", type=int, nargs="+", default=None,
                   help="blocks per grid axis for the block-wise span fit (default: the run's experts; for"
                        " PI-HC none unless given)")
    p.add_argument("--out", default="benchmarks/out/basis_diagnostics.json")
    a = p.parse_args(argv)
    if a.samples < 1:
        p.error(f"--samples must be >= 1, got {a.samples}")
    res = diagnose(a.run, a.samples, a.blocks)
    save(a.out, res)
    print(json.dumps(res["mean"], indent=2))
    return res


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
