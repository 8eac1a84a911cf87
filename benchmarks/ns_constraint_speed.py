"""Speed of the hard-constraint layer on Navier-Stokes: 16 x 64 x 64, N = 64, one sample, forward + backward.

The paper's released layer takes 11.8 s (PI-HC, 20,000 points) and 12.8 s
(PI-HC-MoE, 4 x 16,384 points) for this on one CPU core.  This script times
ours on the same problem size: ``HardConstraint(NavierStokes2D(1e-4), grid,
splits, n_points)(basis, w0, key)`` and the gradient of ``mean(u^2) / 2``
through it with respect to the basis's coefficients (the basis is computed
inside the timed function from them: 64 smooth random columns, a constant
plus products of low Fourier modes in x, y and a quadratic in t).  ``w0`` is
one initial vorticity of the generator's Gaussian random field.  With
``--basis with-solution`` (default) the first column carries the generator's
solution from it, as a trained network's basis carries an approximation of
it: the fit's residuals are then small, as in training.  ``--basis random``
leaves them large (no column fits the flow), where Gauss-Newton-type
iterations converge slowly.  The layer
runs as the ``navier-stokes/moe`` config sets it: the initial condition by
construction, Levenberg-Marquardt with ``rtol`` 1e-7 (``--rtol``), ``atol``
1e-12, at most 50 steps.

A block of the t1 x x2 x y2 split holds 16 x 32 x 32 = 16,384 points, but
the first time level carries the initial condition and no residual row
(the time stencil is causal), so an expert can sample at most 15 x 32 x 32
= 15,360 of them: the MoE row uses all of those.

The MoE's experts run one after the other (``expert_loop="sequential"``,
each to its own convergence) and, for comparison, batched under ``vmap``
(``"vmap"``: every expert iterates until the slowest has converged).
``--baseline-src`` also times another version of the library (the ``src``
folder of an exported commit, e.g. ``git archive <commit> src | tar -x -C
/tmp/base``) in the same run, its variants interleaved with these, so that
a change of load on a shared machine hits both alike; with ``--interleave``
both versions run in one process (the baseline imported as ``pihc_baseline``),
repeat by repeat, which is steadier on a machine whose speed drifts within
minutes, and each row gives its gradient's difference from the baseline's.

One core: the process is pinned to the first CPU it may run on and XLA's CPU backend to one
thread before JAX is imported.  Each variant is compiled and run once,
then timed ``--repeats`` times; the median is reported, with the solver's
iterations and status per expert (every solve must converge).

    python benchmarks/ns_constraint_speed.py --out docs/bench/ns_constraint_speed.json
    python benchmarks/ns_constraint_speed.py --baseline-src /tmp/base/src --baseline-label <commit> --out ...
    python benchmarks/ns_constraint_speed.py --baseline-src /tmp/base/src --baseline-label <commit> --interleave \
        --repeats 9 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import save


def _pin_one_core() -> None:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _basis_fn(grid, n_basis: int, seed: int, solution=None):
    """``coeffs -> basis (*grid, n_basis)``: smooth analytic columns, and their coefficients.

    ``solution`` (``(*grid,)`` or None): multiplied into the first column, which then carries the
    solution's part ``(w(t) - w0) / s(t)`` that the layer's ``w0 + s(t) B w`` needs."""
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    m = grid.mesh()
    t = (m[..., 0] - grid.axes[0].lo) / (grid.axes[0].hi - grid.axes[0].lo)
    x, y = m[..., 1], m[..., 2]
    k = rng.integers(0, 4, size=(n_basis, 2))
    phase = rng.uniform(0, 2 * np.pi, size=n_basis)
    waves = np.stack([np.cos(2 * np.pi * (a * x + b * y) + p) for (a, b), p in zip(k, phase)], -1)
    feats = jnp.asarray(np.stack([np.ones_like(t), t, t ** 2], -1))  # (*grid, 3)
    waves = jnp.asarray(waves)
    coeffs = jnp.asarray(rng.normal(size=(3, n_basis)))

    def basis(c):
        b = 0.1 + (feats @ c) * waves
        if solution is None:
            return b
        return b.at[..., 0].set(solution * (1.0 + 0.1 * b[..., 0]))

    return basis, coeffs


def build(points: int, splits: tuple[int, ...], basis_kind: str, rtol: float = 1e-7, n_basis: int = 64,
          shape=(16, 64, 64), expert_loop: str | None = None, lib: str = "pihc"):
    """The jitted forward + backward and forward of the layer from library ``lib`` (a package name), and their input.

    The inputs (the initial vorticity, the basis) come from this checkout's ``pihc``, so that two
    versions of the layer are timed on the same arrays."""
    import importlib

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from pihc.data.navier_stokes import initial_vorticity, solve_navier_stokes
    from pihc.pdes.navier_stokes import NavierStokes2D as DataPDE

    constraint = importlib.import_module(f"{lib}.constraint")
    least_squares = importlib.import_module(f"{lib}.least_squares")
    ns = importlib.import_module(f"{lib}.pdes.navier_stokes")
    grid = ns.navier_stokes_grid(*shape)
    # expert_loop only when asked: a baseline version of the library may not have the option.
    loop = {} if expert_loop is None else {"expert_loop": expert_loop}
    layer = constraint.HardConstraint(ns.NavierStokes2D(viscosity=1e-4), grid, splits, points,
                                      initial_condition="construction", **loop,
                                      solver=least_squares.LevenbergMarquardt(max_steps=50, rtol=rtol, atol=1e-12,
                                                                              damping=1e-10))
    w0_np = initial_vorticity(1, shape[1], shape[2], seed=0)
    solution = None
    if basis_kind == "with-solution":
        w = solve_navier_stokes(w0_np, DataPDE(viscosity=1e-4), nt=shape[0], t_end=grid.axes[0].hi)[0]
        s = np.linspace(0.0, 1.0, shape[0])[:, None, None]
        solution = jnp.asarray(np.where(s > 0, (w - w0_np[0]) / np.where(s > 0, s, 1.0), 0.0))
    basis, coeffs = _basis_fn(grid, n_basis, seed=0, solution=solution)
    w0 = jnp.asarray(w0_np[0])
    key = jax.random.key(0)

    def loss(c):
        out = layer(basis(c), w0, key)
        return 0.5 * jnp.mean(out.u ** 2), out.solution

    meta = {"grid": list(shape), "n_basis": n_basis, "basis": basis_kind, "rtol": rtol, "splits": list(splits),
            "expert_loop": expert_loop, "points_per_expert": points, "experts": int(np.prod(splits))}
    return jax.jit(jax.value_and_grad(loss, has_aux=True)), jax.jit(loss), coeffs, meta


def _timed(variants: list, repeats: int) -> list[dict]:
    """Compile and run each ``(fwd_bwd, fwd, coeffs, meta)`` once, then time them ``repeats`` times,
    interleaved (each repeat runs every variant), so that a change of load hits all alike."""
    import jax

    out = []
    for fwd_bwd, fwd, coeffs, meta in variants:
        t0 = time.perf_counter()
        (_, sol), g = jax.block_until_ready(fwd_bwd(coeffs))
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(fwd(coeffs))
        out.append({**meta, "times_s": [], "forward_times_s": [], "first_call_s_incl_compile": compile_s,
                    "lm_steps": np.asarray(sol.num_steps).tolist(), "status": np.asarray(sol.status).tolist(),
                    "all_converged": bool(np.all(np.asarray(sol.status) == 0)),
                    "grad_finite": bool(np.all(np.isfinite(np.asarray(g)))), "_grad": np.asarray(g)})
    for _ in range(repeats):
        for row, (fwd_bwd, fwd, coeffs, _) in zip(out, variants):
            t0 = time.perf_counter()
            jax.block_until_ready(fwd_bwd(coeffs))
            row["times_s"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(fwd(coeffs))
            row["forward_times_s"].append(time.perf_counter() - t0)
    for row in out:
        row["forward_backward_s"] = float(np.median(row["times_s"]))
        row["forward_s"] = float(np.median(row["forward_times_s"]))
    return out


def run(points: int, splits: tuple[int, ...], repeats: int, basis_kind: str, rtol: float = 1e-7, n_basis: int = 64,
        shape=(16, 64, 64), expert_loop: str | None = None, libs=("pihc",)) -> list[dict]:
    """One row per library in ``libs``, timed interleaved in this process; every row after the first also
    gives its gradient's largest difference from the first's (relative to the first's largest entry)."""
    rows = _timed([build(points, splits, basis_kind, rtol, n_basis, shape, expert_loop, lib) for lib in libs],
                  repeats)
    ref = rows[0]["_grad"]
    for row in rows:
        g = row.pop("_grad")
        row["grad_max_rel_diff_to_first"] = float(np.max(np.abs(g - ref)) / np.max(np.abs(ref)))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every variant this many times, alternating; report the median of the rounds")
    p.add_argument("--basis", choices=("with-solution", "random"), default="with-solution",
                   help="with-solution: one column carries the numerical solution, as a trained basis does"
                        " (small residuals); random: smooth random columns only (large residuals)")
    p.add_argument("--rtol", type=float, default=1e-7, help="the solver's rtol (navier-stokes/moe: 1e-7)")
    p.add_argument("--baseline-src", help="also time the library in this src folder (another commit's export)")
    p.add_argument("--baseline-label", help="what --baseline-src is, for the JSON (e.g. its commit); a"
                   " machine's path is not recorded")
    p.add_argument("--interleave", action="store_true",
                   help="time the baseline and this version in one process, repeat by repeat (the baseline"
                        " imported as pihc_baseline), instead of in processes one after the other")
    p.add_argument("--out", default="docs/bench/ns_constraint_speed.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _pin_one_core()
        spec = json.loads(a.worker)
        for row in run(spec["points"], tuple(spec["splits"]), spec["repeats"], spec["basis"], spec["rtol"],
                       expert_loop=spec["expert_loop"], libs=tuple(spec.get("libs", ["pihc"]))):
            print("ROW " + json.dumps(row), flush=True)
        return {}
    if a.baseline_src and not (Path(a.baseline_src) / "pihc" / "__init__.py").is_file():
        p.error(f"--baseline-src {a.baseline_src} holds no pihc package; export one with"
                " `git archive <commit> src | tar -x -C DIR` and pass DIR/src")
    variants = [("PI-HC", 20000, (1, 1, 1), None), ("PI-HC-MoE", 15360, (1, 2, 2), "sequential"),
                ("PI-HC-MoE", 15360, (1, 2, 2), "vmap")]
    # (version, method, points, splits, expert loop): the baseline's rows next to this version's.
    # A baseline that has the option runs both expert loops; an older one only its default (batched).
    baseline_loops = a.baseline_src and "expert_loop" in (Path(a.baseline_src) / "pihc" / "constraint.py").read_text()
    # Jobs: (method, points, splits, expert loop, versions); each job is one process, its versions
    # timed interleaved in it (--interleave), or one version per process, the baseline's next to this one's.
    jobs = []
    for name, points, splits, loop in variants:
        if a.baseline_src and (loop != "sequential" or baseline_loops):
            base_loop = loop if baseline_loops else None
            if a.interleave and base_loop == loop:
                jobs.append((name, points, splits, loop, ("baseline", "this")))
                continue
            jobs.append((name, points, splits, base_loop, ("baseline",)))
        jobs.append((name, points, splits, loop, ("this",)))
    rows = {(j, v): {"version": v, "method": job[0], "rounds": []} for j, job in enumerate(jobs) for v in job[4]}
    with tempfile.TemporaryDirectory() as tmp:
        if a.baseline_src and a.interleave:  # the baseline under another name, importable beside this pihc
            shutil.copytree(Path(a.baseline_src) / "pihc", Path(tmp) / "pihc_baseline")
        # --rounds: every job once per round, in the same order, so that a slow spell of a shared
        # machine falls on all of them; a row reports the median over the rounds.
        for _ in range(a.rounds):
            for j, (name, points, splits, loop, versions) in enumerate(jobs):
                spec = {"points": points, "splits": splits, "repeats": a.repeats, "basis": a.basis, "rtol": a.rtol,
                        "expert_loop": loop, "libs": ["pihc_baseline" if v == "baseline" and len(versions) > 1
                                                      else "pihc" for v in versions]}
                env = dict(os.environ)
                extra = [tmp] if len(versions) > 1 else [str(Path(a.baseline_src).resolve())] \
                    if versions == ("baseline",) else []
                env["PYTHONPATH"] = os.pathsep.join(extra + [x for x in [env.get("PYTHONPATH")] if x])
                # A fresh process per job: its own compilation caches and one pinned core.
                out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                     capture_output=True, text=True, check=True, env=env)
                got = [json.loads(x[4:]) for x in out.stdout.splitlines() if x.startswith("ROW ")]
                for v, r in zip(versions, got):
                    rows[(j, v)]["rounds"].append(r)
                    print(json.dumps({"version": v, "method": name, "expert_loop": loop,
                                      **{k: r[k] for k in ("forward_backward_s", "forward_s", "lm_steps",
                                                           "all_converged", "grad_max_rel_diff_to_first")}}),
                          flush=True)
    rows = list(rows.values())
    for i, row in enumerate(rows):
        rounds = row.pop("rounds")
        rows[i] = {**rounds[0], **row, "forward_backward_s": float(np.median([r["forward_backward_s"] for r in rounds])),
                   "forward_s": float(np.median([r["forward_s"] for r in rounds])),
                   "forward_backward_s_per_round": [r["forward_backward_s"] for r in rounds],
                   "all_converged": all(r["all_converged"] for r in rounds)}
    result = {"benchmark": "ns_constraint_speed",
              "baseline": (a.baseline_label or "another version's src folder") if a.baseline_src else None,
              "interleaved": bool(a.baseline_src and a.interleave),
              "cpu_threads": 1, "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
              "load_average_1_5_15min_at_end": list(os.getloadavg()), "rows": rows,
              "paper_released_layer_s": {"PI-HC": 11.8, "PI-HC-MoE": 12.8}}
    result = save(a.out, result)
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
