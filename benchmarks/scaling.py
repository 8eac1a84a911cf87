"""Scale-out of the constraint layer and the training step over a ``batch x expert`` device mesh.

Four parts (``pihc bench scaling``; JSON to ``--out``, a plot to ``--plot``):

1. Lockstep: Levenberg-Marquardt iterations each expert needs (its own
   ``num_steps``) against those computed when all experts of all samples are
   ``vmap`` lanes of one loop (every lane runs until the slowest stops) and
   when ``E`` devices each run their own experts' loop under ``shard_map``
   (each device runs until its slowest stops), on an untrained basis and on a
   "trained" one (the untrained basis with one column replaced by a converged
   constrained solution, so its span holds a near-solution, as a trained
   backbone's does).  The sharded solves' counts are checked equal to the
   unsharded ones.
2. Strong and weak scaling of the constraint layer (forward and backward)
   and of a training step on 1, 2, 4, 8 forced CPU devices.  The devices
   share this machine's cores, so this measures correctness and overhead,
   not speed-up; the one-device sharded path (a 1 x 1 mesh) against the
   unsharded one is the overhead the sharding adds.  The bytes that cross
   devices are read from the compiled programs' collectives.
3. A cost model from shapes alone (FLOPs and bytes per expert per LM
   iteration, bytes across devices per step) that predicts the constraint
   layer's speed-up on 4 and 8 GPUs and on 2 hosts, at the size above and at
   the paper's Navier-Stokes size (64 x 64 x 64 grid, N = 64, 4 experts of
   16,384 points, batch 2).  Its assumptions are in ``ASSUMPTIONS``.

Run: ``nice python benchmarks/scaling.py`` (``--quick``: fewer repeats).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pihc import FNO, HardConstraint, LevenbergMarquardt, PIHCMoE, RowWeights
from pihc.data.diffusion_sorption import initial_conditions
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid
from pihc.sharding import BATCH, device_mesh, replicated, sharded_batch
from pihc.training.config import Config, from_dict
from pihc.training.optim import make_optimizer
from pihc.training.step import make_step

from _record import commit, save

# The benchmark's problem: diffusion-sorption on 33 x 128 with 8 experts (1 x 8 blocks of 33 x 16),
# 256 points each, N = 16 basis functions from a small FNO; batch 8; the demo config's weights and solver.
NT, NX, N, SPLITS, M, BATCH_SIZE = 33, 128, 16, (1, 8), 256, 8
SOLVER = LevenbergMarquardt(max_steps=100, rtol=1e-4, atol=1e-10)  # the demo config's
WEIGHTS = RowWeights(pde=250.0, initial=256.0, boundary=100.0)


def problem(splits=SPLITS, mesh=None):
    grid = diffusion_sorption_grid(NT, NX)
    pde = DiffusionSorption()
    layer = HardConstraint(pde, grid, splits, M, row_weights=WEIGHTS, solver=SOLVER, mesh=mesh)
    return pde, grid, layer


def backbone():
    return FNO(3, N, width=16, modes=(8, 8), n_layers=2, key=jax.random.key(0))


def inputs(batch: int):
    u0 = jnp.asarray(initial_conditions(batch, NX, seed=1, family="pdebench"))
    return u0, jax.random.split(jax.random.key(2), batch)


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call, median of ``repeats`` calls) in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


_SHAPE = re.compile(r"(pred|s8|s16|s32|s64|u8|u16|u32|u64|f16|bf16|f32|f64|c64|c128)\[([0-9,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def collective_bytes(compiled_text: str) -> dict:
    """Bytes of the results of each kind of collective in a compiled (partitioned) HLO module.

    A static count; ``in_loop_bodies``: the part inside a while loop's body, which runs once per
    iteration (none is expected: the experts' loops do not communicate).
    """
    bodies = set(re.findall(r"body=%?([\w.\-]+)", compiled_text))
    out = {k: 0 for k in _COLLECTIVES}
    out["in_loop_bodies"] = 0
    current = None
    for line in compiled_text.splitlines():
        head = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(1)
        for kind in _COLLECTIVES:
            if f" {kind}(" in line or f" {kind}-start(" in line:
                lhs = line.split("=", 1)[1].split(kind)[0] if "=" in line else ""
                n = sum(_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _SHAPE.findall(lhs))
                out[kind] += n
                if current in bodies:
                    out["in_loop_bodies"] += n
    return out


# --- 1. lockstep --------------------------------------------------------------------------------

def lockstep(steps: np.ndarray, experts_per_device: int, batch_rows: int = 1) -> dict:
    """Iterations computed under one vmapped loop per device: each device runs ``lanes x max``.

    ``steps``: (batch, K) iterations needed.  Devices hold ``batch/batch_rows`` samples and
    ``experts_per_device`` consecutive experts."""
    B, K = steps.shape
    computed = 0
    for rows in np.split(steps, batch_rows, axis=0):
        for block in np.split(rows, K // experts_per_device, axis=1):
            computed += block.size * int(block.max())
    needed = int(steps.sum())
    return {"needed": needed, "computed": int(computed), "computed_over_needed": computed / needed}


def lockstep_part(repeats: int) -> dict:
    pde, grid, layer = problem()
    fno = backbone()
    u0, keys = inputs(BATCH_SIZE)
    model = PIHCMoE(fno, layer)
    basis = jax.jit(jax.vmap(model.basis))(u0)
    run = jax.jit(jax.vmap(lambda b, a, k: layer(b, a, k)))
    out = run(basis, u0, keys)
    # "Trained": column 0 of each sample's basis replaced by its converged constrained solution.
    converged = np.asarray(out.solution.status == 0)
    trained = basis.at[..., 0].set(out.u.astype(basis.dtype))
    result = {}
    for name, b in (("untrained", basis), ("trained", trained)):
        sol = run(b, u0, keys).solution
        steps = np.asarray(sol.num_steps)
        jax.block_until_ready(b)
        mesh = device_mesh(1, 8)
        sharded = jax.jit(jax.vmap(lambda bb, a, k: layer.on_mesh(mesh)(bb, a, k), spmd_axis_name=BATCH))
        steps_sharded = np.asarray(sharded(b, u0, keys).solution.num_steps)
        result[name] = {
            "num_steps": steps.tolist(), "converged": float(np.mean(np.asarray(sol.status) == 0)),
            "sharded_num_steps_equal": bool(np.array_equal(steps, steps_sharded)),
            "vmap_one_device": lockstep(steps, SPLITS[1] * SPLITS[0]),
            **{f"shard_map_{e}_devices": lockstep(steps, 8 // e) for e in (2, 4, 8)},
            "per_expert_needed_mean": float(steps.mean()), "per_expert_computed_vmap": int(steps.max()),
        }
    result["untrained_converged_fraction_for_trained_basis"] = float(converged.mean())
    return result


# --- 2. measured scaling ------------------------------------------------------------------------

def layer_fn(layer, mesh):
    spmd = None if mesh is None else BATCH

    def f(basis, u0, keys):
        def loss(b):
            out = jax.vmap(lambda bb, a, k: layer.on_mesh(mesh)(bb, a, k), spmd_axis_name=spmd)(b, u0, keys)
            return jnp.sum(out.u ** 2)
        return jax.value_and_grad(loss)(basis)

    return jax.jit(f)


def put(x, sharding):
    return jax.device_put(x, sharding)


def measure_layer(repeats: int) -> list[dict]:
    rows = []
    fno = backbone()
    cases = [("strong", None, SPLITS, BATCH_SIZE)] + [("strong", (1, e), SPLITS, BATCH_SIZE) for e in (1, 2, 4, 8)]
    cases += [("weak", (1, d), (1, d), BATCH_SIZE) for d in (1, 2, 4, 8)]
    for kind, shape, splits, batch in cases:
        mesh = None if shape is None else device_mesh(*shape)
        _, grid, layer = problem(splits)
        u0, keys = inputs(batch)
        basis = jax.jit(jax.vmap(PIHCMoE(fno, layer).basis))(u0).astype(jnp.float64)
        f = layer_fn(layer, mesh)
        if mesh is not None:
            basis, u0, keys = (put(x, sharded_batch(mesh)) for x in (basis, u0, keys))
        # Nothing else in flight when a program of several CPU devices starts: a device whose thread is busy
        # elsewhere can stall the others' collectives.
        jax.block_until_ready((basis, u0, keys))
        t0 = time.perf_counter()
        compiled = f.lower(basis, u0, keys).compile()
        compile_s = time.perf_counter() - t0
        first, t = timed(compiled, basis, u0, keys, repeats=repeats)
        comm = collective_bytes(compiled.as_text()) if mesh is not None else None
        rows.append({"part": "constraint layer (forward + backward)", "scaling": kind,
                     "mesh": None if shape is None else list(shape),
                     "devices": 1 if shape is None else math.prod(shape),
                     "experts": math.prod(splits), "batch": batch, "first_call_s": compile_s + first, "time_s": t,
                     "collective_bytes": comm})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def step_config(batch: int, splits) -> Config:
    return from_dict(Config, {
        "problem": "diffusion-sorption", "data": {"nt": NT, "nx": NX},
        "model": {"method": "moe", "width": 16, "modes": [8, 8], "layers": 2, "n_basis": N},
        "constraint": {"splits": list(splits), "n_points": M,
                       "row_weights": {"pde": WEIGHTS.pde, "initial": WEIGHTS.initial, "boundary": WEIGHTS.boundary},
                       "solver": {"max_steps": SOLVER.max_steps, "rtol": SOLVER.rtol, "atol": SOLVER.atol}},
        "optim": {"batch": batch, "steps": 100}})


def measure_step(repeats: int) -> list[dict]:
    rows = []
    cases = [("strong", None, BATCH_SIZE)]
    cases += [("strong", s, BATCH_SIZE) for s in ((1, 1), (1, 2), (1, 4), (1, 8), (2, 4))]
    cases += [("weak", (d, 1), d) for d in (1, 2, 4, 8)]
    for kind, shape, batch in cases:
        mesh = None if shape is None else device_mesh(*shape)
        cfg = step_config(batch, SPLITS)
        pde, grid, layer = problem()
        model = PIHCMoE(backbone(), layer)
        opt = make_optimizer(cfg)
        state = opt.init(eqx.filter(model, eqx.is_inexact_array))
        u0, keys = inputs(batch)
        step = make_step(cfg, opt, pde, grid, mesh=mesh)
        if mesh is not None:
            model, state = (jax.tree.map(lambda x: put(x, replicated(mesh)) if eqx.is_array(x) else x, t)
                            for t in (model, state))
            u0, keys = put(u0, sharded_batch(mesh)), put(keys, sharded_batch(mesh))
        jax.block_until_ready((model, state, u0, keys))
        t0 = time.perf_counter()
        compiled = step.lower(model, state, u0, keys).compile()  # equinox's Compiled, around jax's
        compile_s = time.perf_counter() - t0
        first, t = timed(compiled, model, state, u0, keys, repeats=repeats)
        first += compile_s
        comm = None if mesh is None else collective_bytes(compiled.compiled.as_text())
        rows.append({"part": "training step", "scaling": kind, "mesh": None if shape is None else list(shape),
                     "devices": 1 if shape is None else math.prod(shape), "experts": math.prod(SPLITS),
                     "batch": batch, "first_call_s": first, "time_s": t, "collective_bytes": comm,
                     "parameters": int(sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --- 3. cost model ------------------------------------------------------------------------------

ASSUMPTIONS = {
    "device": "one H200-class GPU: 4.8e12 B/s memory bandwidth, 6.0e13 FLOP/s float64 (tensor cores) for dots,"
              " 3.0e13 FLOP/s float64 elsewhere",
    "bandwidth_B_per_s": 4.8e12, "flops_dot": 6.0e13, "flops_other": 3.0e13,
    "link_in_host_B_per_s": 4.5e11, "link_between_hosts_B_per_s": 5.0e10, "latency_s": 1.0e-5,
    "roofline": "each part takes max(FLOPs / rate, bytes / bandwidth); parts add",
    "lm_iteration": "per expert: terms Phi w + c (2 m T N), J = dF Phi (2 m T N), J^T J (2 m N^2), J^T r, two"
                    " N x N Cholesky solves (2 N^3 / 3); Phi (m T N float64) read twice",
    "adjoint": "per expert: H = Phi^T (M Phi) (2 m T^2 N + 2 m T N^2), one N x N solve; Phi read twice",
    "linearise": "the row map's tangent on each of the N basis columns over the whole grid is replicated on every"
                 " expert device (each holds the whole basis), memory bound: `passes` reads+writes of a float64 grid"
                 " per column (spectral derivatives in x, y: an rfft2, two complex ifft2 and an irfft2, about 6"
                 " passes of complex128, passes = 12; finite"
                 " differences: passes = 2); each device writes the terms at its own experts' points only",
    "communication": "the experts' weights (K N float64, all-gathered), the adjoint's per-expert factors"
                     " (2 K (m T + n_rows) float64, all-gathered), the backbone's gradient (all-reduced over"
                     " batch), a ring: 2 (d - 1) / d of the bytes per device",
    "iterations": "LM iterations per expert from part 1 (the benchmark's problem): the mean needed, and the"
                  " maximum over the lanes one device holds",
}


def cost_model(grid_points: int, N: int, K: int, m: int, T: int, n_rows: int, batch: int, iters: np.ndarray,
               params: int, passes: float, backbone_bytes_per_sample: float) -> dict:
    """Predicted time of the constraint layer per step on 1 device and on ``d`` devices (see ASSUMPTIONS).

    ``iters``: (samples, K) LM iterations needed, whose pattern sets the lockstep cost."""
    A = ASSUMPTIONS
    f8 = 8

    def t(flops_dot, flops_other, nbytes):
        return max(flops_dot / A["flops_dot"] + flops_other / A["flops_other"], nbytes / A["bandwidth_B_per_s"])

    phi = m * T * N * f8
    it_flops_dot = 2 * m * N * N + 2 * N ** 3 / 3
    it_flops_other = 4 * m * T * N
    t_it = t(it_flops_dot, it_flops_other, 2 * phi)
    t_adj = t(2 * m * T * T * N + 2 * m * T * N * N + N ** 3, 0, 2 * phi)
    def lin_bytes(d_expert: int) -> float:  # whole-grid tangents (replicated) + this device's experts' Phi
        return N * (passes * grid_points * f8) + K // d_expert * phi

    def t_lin(d_expert: int) -> float:  # ~60 FLOPs per point per column: stencils or FFT butterflies
        return t(0, N * grid_points * 60, lin_bytes(d_expert))

    per_expert = {"lm_iteration": {"flops": it_flops_dot + it_flops_other, "bytes": 2 * phi, "time_s": t_it},
                  "adjoint": {"flops": 2 * m * T * T * N + 2 * m * T * N * N + N ** 3, "bytes": 2 * phi,
                              "time_s": t_adj}}
    reps = max(1, iters.shape[0] // batch)
    samples = iters[:batch * reps].reshape(reps, batch, -1)[..., :K] if iters.shape[1] >= K else None

    def layer_time(d_expert: int, d_batch: int, link: float) -> tuple[float, float]:
        """(time, bytes across devices per device) of one step's constraint layer."""
        total = 0.0
        for s in samples:
            per_row = np.array_split(s, d_batch, axis=0)
            row_times = []
            for rows in per_row:
                lanes = np.split(rows, d_expert, axis=1)
                row_times.append(max(b.size * b.max() * t_it + b.size * t_adj for b in lanes)
                                 + rows.shape[0] * t_lin(d_expert))
            total += max(row_times)
        total /= len(samples)
        moved = 0.0
        if d_expert > 1:  # all-gathers inside a row of the mesh
            per = (batch / d_batch) * (K * N + 2 * K * (m * T + n_rows)) * f8
            moved += 2 * (d_expert - 1) / d_expert * per
        grad = 0.0
        if d_batch > 1:
            grad = 2 * (d_batch - 1) / d_batch * params * 4
        comm = moved / A["link_in_host_B_per_s"] + grad / link + (A["latency_s"] * 4 if d_expert * d_batch > 1 else 0)
        return total + comm, moved + grad

    one, _ = layer_time(1, 1, A["link_in_host_B_per_s"])
    preds = {}
    for name, (de, db, link) in {"4 GPUs (1 x 4)": (4, 1, A["link_in_host_B_per_s"]),
                                 "8 GPUs (2 x 4)": (4, 2, A["link_in_host_B_per_s"]),
                                 "2 hosts x 4 GPUs (2 x 4, batch across hosts)": (4, 2, A["link_between_hosts_B_per_s"])
                                 }.items():
        if K % de or batch % db:
            continue
        tt, moved = layer_time(de, db, link)
        reads = (batch / db) * (backbone_bytes_per_sample + lin_bytes(de)) + sum(
            b.size * b.max() * 2 * phi + b.size * 2 * phi for s in samples
            for rows in np.array_split(s, db, axis=0) for b in np.split(rows, de, axis=1)[:1]) / len(samples)
        preds[name] = {"speed_up": one / tt, "bytes_across_devices_per_device": moved,
                       "bytes_read_per_device": reads, "moved_over_read": moved / reads}
    return {"shapes": {"grid_points": grid_points, "N": N, "K": K, "m": m, "terms": T, "rows": n_rows,
                       "batch": batch, "backbone_parameters": params, "linearise_passes": passes},
            "per_expert": per_expert, "linearise_per_sample_one_device": {"bytes": lin_bytes(1), "time_s": t_lin(1)},
            "one_device_time_s": one, "predictions": preds}


def ns_iterations(steps: np.ndarray, batch: int, K: int) -> np.ndarray:
    """The measured per-(sample, expert) iteration pattern re-blocked to ``K`` experts: each NS expert takes
    the slowest of a group of the benchmark's experts (an NS expert covers more of the grid)."""
    g = steps.shape[1] // K
    blocks = steps.reshape(steps.shape[0], K, g).max(axis=2)
    reps = steps.shape[0] // batch
    return blocks[:reps * batch]


def one_device(repeats: int) -> dict:
    """The training step on one device: unsharded (``mesh=None``) against the sharded path on a 1 x 1
    mesh, timed alternately so that drifts in the machine's load hit both alike."""
    cfg = step_config(BATCH_SIZE, SPLITS)
    pde, grid, layer = problem()
    model = PIHCMoE(backbone(), layer)
    opt = make_optimizer(cfg)
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    u0, keys = inputs(BATCH_SIZE)
    mesh = device_mesh(1, 1)
    plain = make_step(cfg, opt, pde, grid)
    sharded = make_step(cfg, opt, pde, grid, mesh=mesh)
    on_mesh = [jax.tree.map(lambda x: put(x, replicated(mesh)) if eqx.is_array(x) else x, t) for t in (model, state)]
    jax.block_until_ready((on_mesh, u0, keys))
    args = {"unsharded": (plain, (model, state, u0, keys)),
            "sharded 1 x 1": (sharded, (*on_mesh, put(u0, sharded_batch(mesh)), put(keys, sharded_batch(mesh))))}
    out = {}
    for name, (f, xs) in args.items():
        t0 = time.perf_counter()
        a = jax.block_until_ready(f(*xs))
        out[name] = {"first_call_s": time.perf_counter() - t0, "times_s": [], "loss": float(a[2]["loss"])}
    for _ in range(repeats):
        for name, (f, xs) in args.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*xs))
            out[name]["times_s"].append(time.perf_counter() - t0)
    for v in out.values():
        v["median_s"] = float(np.median(v["times_s"]))
    out["sharded_over_unsharded"] = out["sharded 1 x 1"]["median_s"] / out["unsharded"]["median_s"]
    out["loss_relative_difference"] = abs(out["sharded 1 x 1"]["loss"] - out["unsharded"]["loss"]) / abs(
        out["unsharded"]["loss"])
    return out


def main():
    global NT, NX, M, BATCH_SIZE
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/bench/scaling.json")
    p.add_argument("--plot", default="docs/scaling.png")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="3 repeats")
    p.add_argument("--one-device", action="store_true",
                   help="only the training step on one device, unsharded against the 1 x 1 mesh (for a GPU)")
    p.add_argument("--grid", type=int, nargs=2, metavar=("NT", "NX"), help="the problem's grid (default 33 128)")
    p.add_argument("--points", type=int, help="points per expert (default 256)")
    p.add_argument("--batch", type=int, help="samples per step (default 8)")
    p.add_argument("--model-from", metavar="JSON",
                   help="recompute only the cost model (part 3) from the measurements in this file, into --out")
    a = p.parse_args()
    if a.model_from:
        res = json.loads(Path(a.model_from).read_text())
        model_part(res)
        res["cost_model_recomputed"] = {"date": time.strftime("%Y-%m-%d"), "commit": commit()}
        save(a.out, res, indent=1)
        summary(res)
        plot(res, a.plot)
        return
    if not a.one_device and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        # Eight CPU devices; read when JAX starts its backend, which nothing above has done.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                                   ).strip()
    jax.config.update("jax_enable_x64", True)
    repeats = 3 if a.quick else a.repeats
    NT, NX = a.grid or (NT, NX)
    M, BATCH_SIZE = a.points or M, a.batch or BATCH_SIZE
    if a.one_device:
        res = {"device": str(jax.devices()[0]), "jax": jax.__version__,
               "problem": {"grid": [NT, NX], "N": N, "splits": list(SPLITS), "points": M, "batch": BATCH_SIZE},
               "step": one_device(repeats)}
        save(a.out, res, indent=1, echo=True)
        return
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices", flush=True)
    res = {"devices": jax.device_count(), "platform": jax.devices()[0].platform,
           "jax": jax.__version__, "problem": {"grid": [NT, NX], "N": N, "splits": list(SPLITS), "points": M,
                                               "batch": BATCH_SIZE, "solver": {"rtol": SOLVER.rtol}}}
    res["lockstep"] = lockstep_part(repeats)
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "num_steps"} if isinstance(v, dict) else v
                      for k, v in res["lockstep"].items()}, indent=1), flush=True)
    res["measured"] = measure_layer(repeats) + measure_step(repeats)
    res["one_device"] = one_device(max(repeats, 10))
    print(json.dumps({k: v for k, v in res["one_device"].items() if not isinstance(v, dict)}), flush=True)
    model_part(res)
    save(a.out, res, indent=1)
    print(f"wrote {a.out}")
    summary(res)
    plot(res, a.plot)


def model_part(res: dict) -> None:
    """``res["assumptions"]`` and ``res["cost_model"]`` from the shapes and part 1's iteration counts."""
    fno_params = int(sum(x.size for x in jax.tree.leaves(eqx.filter(backbone(), eqx.is_inexact_array))))
    res["assumptions"] = ASSUMPTIONS
    res["cost_model"] = {}
    for basis in ("untrained", "trained"):
        steps = np.asarray(res["lockstep"][basis]["num_steps"])
        n_rows = NX + 2 * NT  # initial row per x, boundary rows per t on each side
        res["cost_model"][f"benchmark size, {basis} basis"] = cost_model(
            NT * NX, N, 8, M, 3, n_rows, BATCH_SIZE, steps, fno_params, passes=2.0,
            backbone_bytes_per_sample=0.0)
        # The paper's Navier-Stokes: 64^3 grid, N = 64, 4 experts of 16,384 points, batch 2; the five terms
        # of NavierStokes2D (w_t - nu lap w, w_x, w_y, u, v); rows: none (initial condition by construction,
        # periodic space).
        # Backbone: an FNO of width 32, modes 8^3, 4 layers (float32): its parameters, and the bytes it reads
        # per sample estimated as 3 passes (forward, two backward) over 8 grids of width 32 per layer.
        ns_params = 4 * 2 * 32 * 32 * 8 * 8 * 8 * 2 + 4 * 32 * 32 + 32 * 128 + 128 * 64
        ns_backbone_bytes = 3 * 4 * 8 * 64 ** 3 * 32 * 4
        for passes, how in ((12.0, "spectral derivatives"), (2.0, "finite differences")):
            res["cost_model"][f"Navier-Stokes size, {basis} basis, {how}"] = cost_model(
                64 ** 3, 64, 4, 16384, 5, 0, 2, ns_iterations(steps, 2, 4), ns_params, passes=passes,
                backbone_bytes_per_sample=ns_backbone_bytes)


def summary(res: dict) -> None:
    print("\nlockstep: iterations computed / needed")
    for basis in ("untrained", "trained"):
        r = res["lockstep"][basis]
        print(f"  {basis:9s} vmap 1 device {r['vmap_one_device']['computed_over_needed']:.2f}  "
              + "  ".join(f"shard_map {e} devices {r[f'shard_map_{e}_devices']['computed_over_needed']:.2f}"
                          for e in (2, 4, 8)))
    print("\nmeasured (forced CPU devices sharing the machine's cores)")
    for r in res["measured"]:
        comm = r["collective_bytes"]
        moved = sum(v for k, v in comm.items() if k != "in_loop_bodies") if comm else 0
        print(f"  {r['part']:38s} {r['scaling']:6s} mesh {str(r['mesh']):8s} batch {r['batch']:2d}"
              f" experts {r['experts']}  {1e3 * r['time_s']:8.1f} ms  collectives {moved} B")
    print("\ncost model: predicted speed-up of the constraint layer")
    for name, c in res["cost_model"].items():
        print(f"  {name}: " + "; ".join(f"{k}: {v['speed_up']:.2f}x, moved/read {100 * v['moved_over_read']:.3f}%"
                                        for k, v in c["predictions"].items()))


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for basis, style in (("untrained", "o-"), ("trained", "s--")):
        r = res["lockstep"][basis]
        ds = [1, 2, 4, 8]
        ys = [r["vmap_one_device"]["computed_over_needed"]] + [r[f"shard_map_{e}_devices"]["computed_over_needed"]
                                                               for e in (2, 4, 8)]
        ax.plot(ds, ys, style, label=basis)
    ax.set(xscale="log", xticks=[1, 2, 4, 8], xticklabels=["1", "2", "4", "8"], xlabel="expert devices",
           ylabel="LM iterations computed / needed", title="lockstep cost")
    ax.legend()
    ax = axes[1]
    for part, scaling, style in (("constraint layer (forward + backward)", "strong", "o-"),
                                 ("constraint layer (forward + backward)", "weak", "o--"),
                                 ("training step", "strong", "s-"), ("training step", "weak", "s--")):
        rows = [r for r in res["measured"] if r["part"] == part and r["scaling"] == scaling and r["mesh"]]
        if rows:
            ax.plot([r["devices"] for r in rows], [1e3 * r["time_s"] for r in rows], style,
                    label=f"{part.split(' (')[0]}, {scaling}")
    ax.set(xscale="log", yscale="log", xlabel="forced CPU devices (2 cores)", ylabel="ms",
           title="measured on CPU (overhead, not speed-up)")
    ax.legend(fontsize=7)
    ax = axes[2]
    names = [n for n in res["cost_model"] if n.startswith("Navier")]
    for i, n in enumerate(names):
        preds = res["cost_model"][n]["predictions"]
        ax.bar(np.arange(len(preds)) + i * 0.2, [v["speed_up"] for v in preds.values()], 0.2,
               label=n.replace("Navier-Stokes size, ", ""))
    if names:
        labels = list(res["cost_model"][names[0]]["predictions"])
        ax.set_xticks(np.arange(len(labels)) + 0.3, [lab.split(" (")[0] for lab in labels], fontsize=8)
    ax.axhline(3.5, color="k", lw=0.5)
    ax.set(ylabel="predicted speed-up", title="constraint layer at Navier-Stokes size (model)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
