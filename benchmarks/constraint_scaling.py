"""Scaling of the hard-constraint layer with the number of points, against optimistix.

For ``P`` points per expert and ``K`` experts split along x (splits ``(1, K)``),
this benchmark times the layer's forward pass and its forward + backward
pass, and records the Levenberg-Marquardt iterations, the residual norms and
the peak memory.  The same problems are then solved with optimistix's
Levenberg-Marquardt, and the two are compared.

The problem: diffusion-sorption with PDEBench's constants on PDEBench's
101 x 1024 (t x x) grid, N = 16 basis functions, a batch of samples.  Each
sample has its own smooth random basis and its own initial condition
``u0 = c0``, with ``c0`` drawn uniformly from (0.02, 0.2).  Each basis column is
a constant plus three products ``cos(pi k t + p) cos(pi l x + q)``.  The
basis is an analytic function, so it can be evaluated at any resolution.
When a block of the 101 x 1024 grid holds fewer than ``P`` points, the basis
is evaluated on a finer grid of the same domain; each row records its grid.
The basis is computed inside the timed function from its coefficients.  The
backward pass is the gradient of ``mean(u^2) / 2`` with respect to those
coefficients.  It goes through the whole layer: the implicit adjoint, the
gather of the sampled points and the linearisation on the full grid.

Ours is the layer itself, ``HardConstraint(...)(basis, u0, key)``: its
point sampling, linearisation, Levenberg-Marquardt solves and structured
implicit adjoint.  Theirs solves the same problems with
``optx.least_squares(..., optx.LevenbergMarquardt(rtol, atol),
adjoint=optx.ImplicitAdjoint())``: each expert's residual is written here
from the layer's documented objective (:func:`expert_problems`), with the
PDE terms and rows from :func:`pihc.linearise` at the points the layer
sampled (``ConstrainedSolution.points``, computed once before the timing),
started where the layer starts (``start="row_fit"``: the linear rows' solution),
with the same ``rtol``/``atol``, ``max_steps`` and float64.  Both sides
assemble ``u`` from the experts' blocks the same way.  The weights the two
find agree to the solvers' tolerances when the objectives are the same;
``weights_max_rel_diff`` checks it.

Each (P, K) configuration runs in a fresh subprocess, so that its peak
resident memory (``ru_maxrss``) is its own.  That figure is taken after our
layer's runs and before optimistix's.  Inside a subprocess the functions are
compiled and run once (warm-up).  The timed repeats of ours and optimistix
are then interleaved, and the medians are reported.

    python benchmarks/constraint_scaling.py                      # full sweep (about 1-2 h on 2 cores)
    python benchmarks/constraint_scaling.py --small              # quick: up to 1e4 points, batch 2
    python benchmarks/constraint_scaling.py --points 20000 --experts 4   # the paper's setting
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _record import save

N_BASIS = 16
N_MODES = 3  # cosine products per basis column
BASE_GRID = (101, 1024)
C0_RANGE = (0.02, 0.2)
# Memory model, bytes per float64 per sample: a * G * N + b * K * P * N (G grid points,
# N basis functions).  The coefficients were calibrated from measured peaks
# (see docs/benchmarks.md) and are kept on the safe side.
_MEM_GRID, _MEM_POINTS = 14.0, 12.0


# --------------------------------------------------------------------------- problem


def choose_grid(points: int, experts: int) -> tuple[int, int]:
    """(nt, nx): PDEBench's 101 x 1024, refined until each of ``experts`` x-blocks
    holds ``points`` residual points (t > 0).  nx and nt - 1 are doubled in turn,
    starting with nx."""
    nt, nx = BASE_GRID
    turn = 0
    while (nt - 1) * (nx // experts) < points:
        if turn % 2 == 0:
            nx *= 2
        else:
            nt = 2 * (nt - 1) + 1
        turn += 1
    return nt, nx


def basis_coefficients(rng: np.random.Generator, n_basis: int = N_BASIS) -> dict:
    """Random coefficients of one smooth basis (see :func:`evaluate_basis`)."""
    shape = (n_basis, N_MODES)
    return dict(
        bias=rng.uniform(0.2, 0.4, size=n_basis),
        amp=0.15 * rng.normal(size=shape) / math.sqrt(N_MODES),
        kt=rng.integers(0, 3, size=shape).astype(float),
        kx=rng.integers(0, 4, size=shape).astype(float),
        pt=rng.uniform(0, 2 * np.pi, size=shape),
        px=rng.uniform(0, 2 * np.pi, size=shape))


def evaluate_basis(theta: dict, grid):
    r"""``b_n(t, x) = bias_n + sum_j amp_nj cos(pi kt_nj s + pt_nj) cos(pi kx_nj x + px_nj)``,
    ``s = t / t_max`` in [0, 1], on every point of ``grid``; shape ``(nt, nx, N)``."""
    import jax.numpy as jnp

    s = jnp.asarray((grid.coords("t") - grid.axes[0].lo) / (grid.axes[0].hi - grid.axes[0].lo))
    x = jnp.asarray(grid.coords("x"))
    ct = jnp.cos(jnp.pi * theta["kt"][..., None] * s + theta["pt"][..., None])  # (N, M, nt)
    cx = jnp.cos(jnp.pi * theta["kx"][..., None] * x + theta["px"][..., None])  # (N, M, nx)
    return jnp.einsum("nmt,nmx->txn", theta["amp"][..., None] * ct, cx) + theta["bias"]


def make_batch(batch: int, seed: int):
    rng = np.random.default_rng(seed)
    thetas = [basis_coefficients(rng) for _ in range(batch)]
    theta = {k: np.stack([t[k] for t in thetas]) for k in thetas[0]}
    c0 = rng.uniform(*C0_RANGE, size=batch)
    return theta, c0


def _estimate_bytes_per_sample(nt: int, nx: int, points: int, experts: int) -> float:
    return 8.0 * N_BASIS * (_MEM_GRID * nt * nx + _MEM_POINTS * experts * points)


# --------------------------------------------------------------------------- solvers


def expert_problems(hc, basis, u0, points):
    r"""Each expert's least-squares problem, written from the layer's objective (:mod:`pihc.constraint`).

    Expert ``k`` minimises ``1/2 ||r_k(w)||^2`` with the stacked residual

    .. math::
        r_k(w) = \big[\sqrt{\lambda_{pde}/m}\, F(\Phi_j w + c_j)_{j \in S_k},\;
                 \sqrt{\lambda_{ic}/n_{ic}}\, (A^{ic} w + a^{ic}),\;
                 \sqrt{\lambda_{bc}/n_{bc}}\, (A^{bc} w + a^{bc}),\; \rho\, w\big]

    (every expert fits all initial/boundary rows: the layer's ``row_scope="global"``).
    ``Phi``, ``c`` and the rows come from :func:`pihc.linearise` at the points
    ``S_k`` the layer sampled.  Returns ``(residual, args, in_axes, w0, lin)``:
    ``args`` batched over the experts along ``in_axes``, and ``w0`` the
    layer's start (``start="row_fit"``): the minimiser of the linear rows and the
    ridge alone.
    """
    import jax.numpy as jnp

    from pihc import linearise

    lin = linearise(hc.pde, basis, u0, hc.grid, points=points)
    wt, m = hc.row_weights, points.shape[-1]
    n_ic = hc.pde.initial_row_points(hc.grid).shape[0]
    n_bc = hc.pde.boundary_row_points(hc.grid).shape[0]
    s_pde = math.sqrt(wt.pde / m)
    # The rows are the initial rows, then the boundary rows; each block a mean of squares.
    scale = jnp.concatenate([jnp.full(n_ic, math.sqrt(wt.initial / max(n_ic, 1))),
                             jnp.full(n_bc, math.sqrt(wt.boundary / max(n_bc, 1)))])

    def residual(w, a):
        T = jnp.einsum("mtn,n->mt", a["phi"], w) + a["c"]
        return jnp.concatenate([s_pde * hc.pde.residual(T), scale * (a["rows"] @ w + a["rows_offset"]),
                                wt.ridge * w])

    args = dict(phi=lin.terms, c=lin.terms_offset, rows=lin.rows, rows_offset=lin.rows_offset)
    in_axes = dict(phi=0, c=0, rows=None, rows_offset=None)
    R = scale[:, None] * lin.rows
    r0 = scale * lin.rows_offset
    n = R.shape[1]
    w0 = -jnp.linalg.solve(R.T @ R + wt.ridge ** 2 * jnp.eye(n, dtype=R.dtype), R.T @ r0)
    return residual, args, in_axes, jnp.broadcast_to(w0, (points.shape[0], n)), lin


def _optimistix_layer(hc, basis, u0, points):
    """The layer's forward pass with optimistix's Levenberg-Marquardt in place of pihc's solver:
    the same points, objective and start.  Returns (u, weights, steps, ok, residual norm)."""
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    from pihc import partition, unpartition

    residual, args, in_axes, w0, lin = expert_problems(hc, basis, u0, points)
    solver = optx.LevenbergMarquardt(rtol=hc.solver.rtol, atol=hc.solver.atol)

    def solve(w_start, a):
        sol = optx.least_squares(residual, solver, w_start, a, max_steps=hc.solver.max_steps,
                                 adjoint=optx.ImplicitAdjoint(), throw=False)
        rnorm = jnp.linalg.norm(residual(jax.lax.stop_gradient(sol.value), jax.lax.stop_gradient(a)))
        return sol.value, sol.stats["num_steps"], sol.result == optx.RESULTS.successful, rnorm

    w, steps, ok, rnorm = jax.vmap(solve, in_axes=(0, in_axes))(jax.lax.stop_gradient(w0), args)
    blocks = partition(lin.B, hc.splits)
    u = unpartition(jnp.einsum("k...n,kn->k...", blocks, w), hc.splits) + lin.offset
    return u, w, steps, ok, rnorm


def _sample_fns(hc):
    """Per-sample ``(theta, c0, key, points) -> (loss, stats)`` for ours and optimistix.

    Ours samples its points from ``key``; optimistix gets the points ours
    sampled (``points``, computed once before the timing).
    """
    import jax.numpy as jnp

    nx = hc.grid.shape[1]

    def ours(theta, c0, key, points):
        out = hc(evaluate_basis(theta, hc.grid), jnp.full(nx, c0), key)
        s = out.solution
        return 0.5 * jnp.mean(out.u ** 2), dict(w=out.weights, steps=s.num_steps, rnorm=s.residual_norm,
                                               ok=s.converged)

    def theirs(theta, c0, key, points):
        u, w, steps, ok, rnorm = _optimistix_layer(hc, evaluate_basis(theta, hc.grid), jnp.full(nx, c0), points)
        return 0.5 * jnp.mean(u ** 2), dict(w=w, steps=steps, rnorm=rnorm, ok=ok)

    return ours, theirs


def _batched(fn, mode):
    import jax

    if mode == "vmap":
        return jax.jit(jax.vmap(fn))
    return jax.jit(lambda *xs: jax.lax.map(lambda a: fn(*a), xs))


def _fwd_bwd(fn):
    import jax

    # Samples are independent, so the gradient of the batch's summed loss with
    # respect to sample b's coefficients is that of sample b's own loss; taking
    # it per sample lets the sequential mode hold one sample's tape at a time.
    return jax.value_and_grad(fn, has_aux=True)


def _timed(f, *xs):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*xs))
    return time.perf_counter() - t0, out


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def run_config(points: int, experts: int, batch: int, repeats: int, optimistix: bool, mode: str,
               seed: int = 0, rtol: float = 1e-8, atol: float = 1e-12, max_steps: int = 100) -> dict:
    """One (points, experts) configuration in this process; see the module docstring."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from pihc import DiffusionSorption, HardConstraint, LevenbergMarquardt, RowWeights, diffusion_sorption_grid

    nt, nx = choose_grid(points, experts)
    grid = diffusion_sorption_grid(nt, nx)
    # The paper's weights (configs/diffusion-sorption/moe.yaml): pde = T^2 makes
    # the residual's units those of u.
    weights = RowWeights(pde=grid.axes[0].hi ** 2, initial=1.0, boundary=1.0, ridge=1e-4)
    hc = HardConstraint(DiffusionSorption(), grid, (1, experts), points, row_weights=weights,
                        solver=LevenbergMarquardt(max_steps=max_steps, rtol=rtol, atol=atol))
    theta_np, c0_np = make_batch(batch, seed)
    theta = {k: jnp.asarray(v) for k, v in theta_np.items()}
    c0 = jnp.asarray(c0_np)
    keys = jax.random.split(jax.random.key(seed + 1), batch)
    # The points ours samples from each key (they depend on the key alone), for optimistix.
    sampled = _batched(lambda t, c, k: hc(evaluate_basis(t, grid), jnp.full(nx, c), k).points, mode)(
        theta, c0, keys)
    rss_base = _peak_rss_gb()
    ours, theirs = _sample_fns(hc)
    fns = {"ours": {"fwd": _batched(ours, mode), "fwd_bwd": _batched(_fwd_bwd(ours), mode)}}
    if optimistix:
        fns["optimistix"] = {"fwd": _batched(theirs, mode), "fwd_bwd": _batched(_fwd_bwd(theirs), mode)}
    row = dict(points=points, experts=experts, total_points=points * experts, grid=[nt, nx],
               refined=[nt, nx] != list(BASE_GRID), batch=batch, batch_mode=mode, repeats=repeats,
               n_basis=N_BASIS, rtol=rtol, atol=atol, max_steps=max_steps)
    results, times = {}, {}
    for name in fns:  # warm-up (compile + first run); ours first so its peak memory is its own
        for phase, f in fns[name].items():
            times[name, phase] = []
            dt, out = _timed(f, theta, c0, keys, sampled)
            row[f"{name}_{phase}_first_s"] = dt
            results[name, phase] = out
        if name == "ours":
            row["ours_peak_rss_gb"] = _peak_rss_gb()
    for _ in range(repeats):  # interleaved, so changes in machine load hit both alike
        for (name, phase) in times:
            times[name, phase].append(_timed(fns[name][phase], theta, c0, keys, sampled)[0])
    row["peak_rss_gb"] = _peak_rss_gb()
    row["baseline_rss_gb"] = rss_base
    for (name, phase), ts in times.items():
        row[f"{name}_{phase}_s"] = float(np.median(ts))
        row[f"{name}_{phase}_times_s"] = ts
    for name in fns:
        _, stats = results[name, "fwd"]
        (_, stats_b), grad = results[name, "fwd_bwd"]
        steps, ok = np.asarray(stats["steps"]), np.asarray(stats["ok"])
        row[f"{name}_iterations_mean"] = float(steps.mean())
        row[f"{name}_iterations_max"] = int(steps.max())
        row[f"{name}_converged"] = f"{int(ok.sum())}/{ok.size}"
        row[f"{name}_residual_norm_median"] = float(np.median(np.asarray(stats["rnorm"])))
        row[f"{name}_residual_norm_max"] = float(np.max(np.asarray(stats["rnorm"])))
        row[f"{name}_grad_finite"] = bool(all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grad)))
        row[f"{name}_fwd_bwd_same_solution"] = bool(np.allclose(stats["w"], stats_b["w"], rtol=1e-12, atol=0))
    if optimistix:
        wo, wt = np.asarray(results["ours", "fwd"][1]["w"]), np.asarray(results["optimistix", "fwd"][1]["w"])
        both = np.asarray(results["ours", "fwd"][1]["ok"]) & np.asarray(results["optimistix", "fwd"][1]["ok"])
        rel = np.max(np.abs(wo - wt), axis=-1) / np.max(np.abs(wo), axis=-1)  # per (sample, expert)
        row["both_converged"] = f"{int(both.sum())}/{both.size}"
        row["weights_max_rel_diff"] = float(rel[both].max()) if both.any() else None
        # Where the weights differ, which solver stopped at the lower cost?
        ro = np.asarray(results["ours", "fwd"][1]["rnorm"])
        rt = np.asarray(results["optimistix", "fwd"][1]["rnorm"])
        differ = both & (rel > 1e-6)
        row["differing_solutions"] = int(differ.sum())
        row["differing_ours_lower_cost"] = int((differ & (ro < rt)).sum())
        (_, _), go = results["ours", "fwd_bwd"]
        (_, _), gt = results["optimistix", "fwd_bwd"]
        gdiff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(float(np.max(np.abs(np.asarray(a)))), 1e-300))
                    for a, b in zip(jax.tree.leaves(go), jax.tree.leaves(gt)))
        row["grad_max_rel_diff"] = gdiff
        for phase in ("fwd", "fwd_bwd"):
            row[f"ratio_{phase}"] = row[f"optimistix_{phase}_s"] / row[f"ours_{phase}_s"]
    return row


# --------------------------------------------------------------------------- driver


def _worker(spec: dict) -> None:
    try:
        row = run_config(**spec)
    except Exception as e:  # reported in the row, the sweep goes on
        row = dict(points=spec["points"], experts=spec["experts"], error=f"{type(e).__name__}: {e}")
    print("ROW " + json.dumps(row), flush=True)


def _run_subprocess(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = dict(os.environ, JAX_ENABLE_X64="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(points=spec["points"], experts=spec["experts"], skipped=f"timed out after {timeout:.0f} s")
    rows = [ln[4:] for ln in p.stdout.splitlines() if ln.startswith("ROW ")]
    if not rows:
        why = "killed (out of memory?)" if p.returncode in (-9, 137) else f"exit code {p.returncode}"
        return dict(points=spec["points"], experts=spec["experts"], error=why, stderr=p.stderr[-2000:])
    row = json.loads(rows[-1])
    row["wall_s"] = time.perf_counter() - t0
    return row


def loglog_slopes(rows: list[dict], key: str, lo: float = 1e3, hi: float = 1e6) -> dict:
    """Least-squares slope of log(time per sample) against log(points) per K,
    points in [lo, hi] (per sample, so rows run with different batches compare)."""
    out = {}
    for K in sorted({r["experts"] for r in rows}):
        pts = [(r["points"], r[key] / r["batch"]) for r in rows
               if r["experts"] == K and key in r and lo <= r["points"] <= hi]
        if len(pts) >= 2:
            x, y = np.log10([p for p, _ in pts]), np.log10([t for _, t in pts])
            out[str(K)] = float(np.polyfit(x, y, 1)[0])
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    Ks = sorted({r["experts"] for r in rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, phase, title in zip(axes, ("fwd", "fwd_bwd"), ("forward", "forward + backward")):
        for i, K in enumerate(Ks):
            for name, style in (("ours", "-o"), ("optimistix", "--s")):
                pts = sorted((r["points"], r[f"{name}_{phase}_s"] / r["batch"]) for r in rows
                             if r["experts"] == K and f"{name}_{phase}_s" in r)
                if pts:
                    label = f"K={K} " + ("pihc" if name == "ours" else "optimistix LM")
                    ax.plot(*zip(*pts), style, color=colors[i % len(colors)], label=label, ms=4,
                            alpha=1.0 if name == "ours" else 0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sampled points per expert")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    batches = sorted({r["batch"] for r in rows})
    axes[0].set_ylabel(f"time per sample (s; batches of {', '.join(map(str, batches))})")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Hard-constraint layer, diffusion-sorption, N = 16: pihc LM vs optimistix LM")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    head = ("| points/expert | K | grid | batch mode | fwd (s) | fwd+bwd (s) | LM iters (mean/max) |"
            " converged | residual norm (median) | peak RSS (GB) | optx fwd (s) | optx fwd+bwd (s) | optx iters |"
            " optx converged |"
            " ratio fwd | ratio fwd+bwd | max rel. diff w |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(rows, key=lambda r: (r["points"], r["experts"])):
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['points']:.0e} | {r['experts']} | {r.get('grid', '-')} | - | "
                         + f"{r.get('error') or r.get('skipped')} |" + " |" * 12)
            continue
        g = f"{r['grid'][0]}x{r['grid'][1]}"
        it = f"{r['ours_iterations_mean']:.1f}/{r['ours_iterations_max']}"
        oit = (f"{r['optimistix_iterations_mean']:.1f}/{r['optimistix_iterations_max']}"
               if "optimistix_iterations_mean" in r else "-")
        lines.append(
            f"| {r['points']:.0e} | {r['experts']} | {g} | {r['batch_mode']} | {_fmt(r['ours_fwd_s'])} |"
            f" {_fmt(r['ours_fwd_bwd_s'])} | {it} | {r['ours_converged']} | {_fmt(r['ours_residual_norm_median'])} |"
            f" {_fmt(r['ours_peak_rss_gb'], '.2f')} | {_fmt(r.get('optimistix_fwd_s'))} |"
            f" {_fmt(r.get('optimistix_fwd_bwd_s'))} | {oit} | {r.get('optimistix_converged', '-')} |"
            f" {_fmt(r.get('ratio_fwd'), '.1f')} |"
            f" {_fmt(r.get('ratio_fwd_bwd'), '.1f')} | {_fmt(r.get('weights_max_rel_diff'), '.1e')} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=float, nargs="+", default=[1e2, 1e3, 1e4, 2e4, 1e5, 1e6],
                   help="sampled points per expert")
    p.add_argument("--experts", type=int, nargs="+", default=[1, 2, 4, 8], help="K (splits (1, K))")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (median)")
    p.add_argument("--small", action="store_true",
                   help="quick setting: points 1e2 1e3 1e4, experts 1 4, batch 2, 2 repeats")
    p.add_argument("--no-optimistix", action="store_true", help="time our layer only")
    p.add_argument("--optimistix-max-points", type=float, default=float("inf"),
                   help="skip optimistix above this many points per expert")
    p.add_argument("--memory-gb", type=float, default=16.0,
                   help="run the batch sequentially (lax.map) when vmap is estimated to need more")
    p.add_argument("--mode", choices=("auto", "vmap", "sequential"), default="auto")
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--atol", type=float, default=1e-12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    p.add_argument("--out", default="benchmarks/out", help="directory for JSON and PNG")
    p.add_argument("--append", action="store_true",
                   help="merge into an existing constraint_scaling.json in --out (rows of the same"
                        " points and experts are replaced), so a long sweep can run in parts")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(json.loads(a.worker))
        return {}
    if a.small:
        a.points, a.experts, a.batch, a.repeats = [1e2, 1e3, 1e4], [1, 4], 2, 2
    if not a.no_optimistix:
        try:
            import optimistix  # noqa: F401
        except ImportError:
            raise SystemExit('error: this benchmark compares against optimistix, which is not installed:'
                             ' pip install -e ".[bench]" (or run with --no-optimistix)') from None
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    t_start = time.perf_counter()
    for P in sorted(int(x) for x in a.points):
        for K in sorted(a.experts):
            nt, nx = choose_grid(P, K)
            need = a.batch * _estimate_bytes_per_sample(nt, nx, P, K) / 2 ** 30
            mode = a.mode if a.mode != "auto" else ("vmap" if need <= a.memory_gb else "sequential")
            if mode == "sequential" and need / a.batch > a.memory_gb:
                rows.append(dict(points=P, experts=K, grid=[nt, nx], skipped=(
                    f"one sample is estimated to need {need / a.batch:.1f} GB > --memory-gb {a.memory_gb}")))
                continue
            spec = dict(points=P, experts=K, batch=a.batch, repeats=a.repeats, mode=mode, seed=a.seed,
                        optimistix=not a.no_optimistix and P <= a.optimistix_max_points,
                        rtol=a.rtol, atol=a.atol)
            print(f"[{time.perf_counter() - t_start:7.0f} s] P={P:.0e} K={K} grid {nt}x{nx} {mode}"
                  f" (estimated {need:.1f} GB) ...", flush=True)
            row = _run_subprocess(spec, a.timeout)
            row["estimated_gb"] = need
            rows.append(row)
            print("    " + json.dumps({k: v for k, v in row.items() if not k.endswith("times_s")
                                       and k not in ("stderr",)}), flush=True)
    json_path = out_dir / "constraint_scaling.json"
    runs = [dict(argv=list(argv) if argv is not None else sys.argv[1:], total_s=time.perf_counter() - t_start)]
    if a.append and json_path.exists():
        old = json.loads(json_path.read_text())
        new_keys = {(r["points"], r["experts"]) for r in rows}
        rows = [r for r in old["rows"] if (r["points"], r["experts"]) not in new_keys] + rows
        runs = old.get("runs", []) + runs
    ok = [r for r in rows if "ours_fwd_s" in r]
    result = dict(
        benchmark="constraint_scaling", argv=list(argv) if argv is not None else sys.argv[1:],
        problem=dict(pde="DiffusionSorption (PDEBench constants)", base_grid=list(BASE_GRID),
                     n_basis=N_BASIS, c0_range=list(C0_RANGE), splits="(1, K)",
                     basis="bias + 3 products cos(pi k t/T + p) cos(pi l x + q) per column",
                     loss="mean(u^2)/2, gradient w.r.t. the basis coefficients"),
        machine=dict(cpu_count=os.cpu_count(), platform=sys.platform, python=sys.version.split()[0]),
        slopes=dict(ours_fwd=loglog_slopes(ok, "ours_fwd_s"), ours_fwd_bwd=loglog_slopes(ok, "ours_fwd_bwd_s"),
                    optimistix_fwd=loglog_slopes(ok, "optimistix_fwd_s"),
                    optimistix_fwd_bwd=loglog_slopes(ok, "optimistix_fwd_bwd_s")),
        rows=rows, runs=runs)
    try:
        import jax

        result["machine"]["jax"] = jax.__version__
        result["machine"]["device"] = str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001 - informational only
        pass
    save(json_path, result)
    if ok:
        plot(ok, out_dir / "constraint_scaling.png")
    print(table(rows))
    print("log-log slopes (1e3..1e6 points):", json.dumps(result["slopes"]))
    print(f"wrote {out_dir / 'constraint_scaling.json'} and {out_dir / 'constraint_scaling.png'}")
    return result


if __name__ == "__main__":
    main()
