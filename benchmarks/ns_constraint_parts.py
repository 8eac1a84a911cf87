"""Where the Navier-Stokes constraint layer's time goes, part by part (the setting of ns_constraint_speed.py).

On 16 x 64 x 64, N = 64, the basis with the solution in one column, LM
``rtol`` 1e-7, one pinned core and one XLA thread, each part jitted on its
own and timed (the fastest of ``--repeats``): the problem (sampling and
parametrisation), the linearisation (the PDE's terms of every basis column
at the points), one expert's normal equations and exact Hessian (in blocks
of 512 points and in one block), the solves, and the layer forward and
forward + backward.  Parts are compiled separately, so they need not add
up to the layer: inside it XLA fuses across them.

    python benchmarks/ns_constraint_parts.py --out docs/bench/ns_constraint_parts.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import ns_constraint_speed as speed

from _record import save


def _fastest(f, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def parts(points: int, splits, expert_loop: str, repeats: int, shape=(16, 64, 64), n_basis: int = 64) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from pihc.constraint import HardConstraint
    from pihc.data.navier_stokes import initial_vorticity, solve_navier_stokes
    from pihc.least_squares import LevenbergMarquardt
    from pihc.pdes.navier_stokes import NavierStokes2D, navier_stokes_grid

    grid = navier_stokes_grid(*shape)
    pde = NavierStokes2D(viscosity=1e-4)
    layer = HardConstraint(pde, grid, splits, points, initial_condition="construction", expert_loop=expert_loop,
                           solver=LevenbergMarquardt(max_steps=50, rtol=1e-7, atol=1e-12, damping=1e-10))
    w0_np = initial_vorticity(1, shape[1], shape[2], seed=0)
    w = solve_navier_stokes(w0_np, pde, nt=shape[0], t_end=grid.axes[0].hi)[0]
    s = np.linspace(0.0, 1.0, shape[0])[:, None, None]
    solution = jnp.asarray(np.where(s > 0, (w - w0_np[0]) / np.where(s > 0, s, 1.0), 0.0))
    basis_fn, coeffs = speed._basis_fn(grid, n_basis, seed=0, solution=solution)
    basis, u0, key = basis_fn(coeffs), jnp.asarray(w0_np[0]), jax.random.key(0)

    out = {}
    problem_f = jax.jit(lambda b: layer.problem(b, u0, key))
    out["problem_s"] = _fastest(problem_f, basis, repeats=repeats)
    problem = problem_f(basis)
    linearise_f = jax.jit(lambda p: p.linearise())
    out["linearise_s"] = _fastest(linearise_f, problem, repeats=repeats)
    experts = problem.experts(linearise_f(problem))
    first = dataclasses.replace(experts, phi=experts.phi[0], c=experts.c[0], row_scale=experts.row_scale[0])
    solve_f = jax.jit(lambda p: p.solve(None, layer.solver)[0])
    sol = solve_f(problem)
    w1 = sol.value[0]
    for name, block in (("blocks_of_512", 512), ("one_block", first.phi.shape[0])):
        e = dataclasses.replace(first, block=block)
        out[f"normal_equations_one_expert_{name}_s"] = _fastest(
            jax.jit(lambda p, v: p.normal_equations(v, p.rows_gram())), e, w1, repeats=repeats)
        out[f"hessian_one_expert_{name}_s"] = _fastest(
            jax.jit(lambda p, v: p.hessian(v, p.rows_gram())), e, w1, repeats=repeats)
    out["linearise_and_solve_s"] = _fastest(solve_f, problem, repeats=repeats)
    out["layer_forward_s"] = _fastest(jax.jit(lambda b: layer(b, u0, key).u), basis, repeats=repeats)
    out["layer_forward_backward_s"] = _fastest(
        jax.jit(jax.grad(lambda b: 0.5 * jnp.mean(layer(b, u0, key).u ** 2))), basis, repeats=repeats)
    out["lm_steps"] = np.asarray(sol.num_steps).tolist()
    out["all_converged"] = bool(np.all(np.asarray(sol.status) == 0))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/out/ns_constraint_parts.json")
    a = p.parse_args(argv)
    speed._pin_one_core()
    rows = {"PI-HC": parts(20000, (1, 1, 1), "vmap", a.repeats),
            "PI-HC-MoE": parts(15360, (1, 2, 2), "sequential", a.repeats)}
    result = {"benchmark": "ns_constraint_parts", "cpu_threads": 1, "load_average_1_5_15min_at_end": list(os.getloadavg()), "parts": rows}
    return save(a.out, result, echo=True)


if __name__ == "__main__":
    main()
