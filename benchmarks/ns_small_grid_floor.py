"""The discretisation floor of coarse Navier-Stokes grids: how close a zero residual can get to the truth.

The residual rows of :class:`pihc.NavierStokes2D` (midpoint rule in time,
spectral in space) are a causal implicit scheme: row ``i`` reads ``w_i`` and
``w_{i-1}`` only.  With the initial condition exact, the grid function of
zero residual is therefore found time level by time level, each by Newton's
method on that row (dense Jacobian by ``jacfwd``).  It is the minimiser of
the training loss over every grid value, the best a residual-trained model
can do on the grid; its relative L2 distance to the truth is the floor.

The truth: the generator's solution on 64 x 64 x 64 (t = 5 k / 63), solved
at 128^2, sampled to each coarse grid (every k-th time, every j-th point).

    python benchmarks/ns_small_grid_floor.py --out docs/bench/ns_small_grid_floor.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from _record import save


def floor(truth: np.ndarray, pde) -> float:
    """Relative L2 distance of the zero-residual grid function (from ``truth[0]``) to ``truth``."""
    import jax
    import jax.numpy as jnp

    from pihc.pdes.navier_stokes import navier_stokes_grid

    nt, n = truth.shape[0], truth.shape[1]
    g2 = navier_stokes_grid(2, n, n, 5.0 / (nt - 1))  # one time step: rows 0 and 1

    def row(w1, w0):
        return pde.residual(pde.terms(jnp.stack([w0, w1]), g2))[1].ravel()

    res, jac = jax.jit(row), jax.jit(jax.jacfwd(row))
    w = [truth[0]]
    for _ in range(1, nt):
        w1 = w[-1].copy()
        for _ in range(20):
            r = np.asarray(res(w1, w[-1]))
            if np.abs(r).max() < 1e-12:
                break
            w1 = w1 - np.linalg.solve(np.asarray(jac(w1, w[-1])).reshape(n * n, n * n), r).reshape(n, n)
        w.append(np.asarray(w1))
    return float(np.linalg.norm(np.stack(w) - truth) / np.linalg.norm(truth))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--out", default="docs/bench/ns_small_grid_floor.json")
    a = p.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc.data.navier_stokes import initial_vorticity, solve_navier_stokes
    from pihc.pdes.navier_stokes import NavierStokes2D

    pde = NavierStokes2D(viscosity=1e-4)
    w0 = initial_vorticity(a.samples, 64, 64, seed=1000)
    ref = solve_navier_stokes(w0, pde, nt=64, t_end=5.0, solve_nx=128)
    rows = []
    for ft, fx in ((3, 2), (7, 2), (3, 4)):
        truth = ref[:, ::ft, ::fx, ::fx]
        errs = [floor(u, pde) for u in truth]
        still = [float(np.linalg.norm(u - u[:1]) / np.linalg.norm(u)) for u in truth]
        row = {"grid": list(truth.shape[1:]), "floor_rel_l2_mean": float(np.mean(errs)), "floor_per_sample": errs,
               "persistence_rel_l2_mean": float(np.mean(still))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"benchmark": "ns_small_grid_floor",
           "truth": "64 x 64 x 64 solved at 128^2, initial conditions of seeds 1000..", "rows": rows}
    return save(a.out, out)


if __name__ == "__main__":
    main()
