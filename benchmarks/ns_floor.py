"""Discretisation floor of NavierStokes2D's time stencils (the best grid function's error).

For each grid (nt x nx x nx, T = 5, nu = 1e-4) and stencil, the accurate
solution (generated at ``--solve-nx``, sampled on the grid) starts
:func:`pihc.training.floor.matrix_free_floor`, which minimises the training
loss (PDE residual and initial rows, unit weights) over every grid value; the
floor is the minimiser's relative L2 distance to the accurate solution.
``--from-persistence`` also starts each minimisation from ``w(t) = w0`` (the
persistence baseline, ~40% off) to ask whether a local method finds the same
minimum.  Prints and saves JSON.

    python benchmarks/ns_floor.py --grids 16,32 32,32 --stencils midpoint:2 backward:2 central:4
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from _record import save


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc import NavierStokes2D, navier_stokes_grid
    from pihc.data.navier_stokes import initial_vorticity, solve_navier_stokes
    from pihc.losses import LossWeights
    from pihc.training.floor import matrix_free_floor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grids", nargs="+", default=["16,32", "32,32"], help="NT,NX pairs (ny = nx)")
    p.add_argument("--stencils", nargs="+", default=["midpoint:2", "backward:2", "central:4"])
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--solve-nx", type=int, default=128)
    p.add_argument("--from-persistence", action="store_true")
    p.add_argument("--out", default="benchmarks/out/ns_floor.json")
    a = p.parse_args(argv)

    rows = []
    for spec in a.grids:
        nt, nx = (int(v) for v in spec.split(","))
        grid = navier_stokes_grid(nt, nx, nx, 5.0)
        w0 = initial_vorticity(a.samples, nx, nx, seed=0)
        truth = solve_navier_stokes(w0, NavierStokes2D(), nt=nt, t_end=5.0, solve_nx=max(a.solve_nx, nx))
        for st in a.stencils:
            stencil, order = st.split(":")
            pde = NavierStokes2D(time_stencil=stencil, time_accuracy=int(order))
            starts = {"truth": None} | ({"persistence": None} if a.from_persistence else {})
            for start_name in starts:
                res = []
                t0 = time.perf_counter()
                for u in truth:
                    start = np.broadcast_to(u[0], u.shape) if start_name == "persistence" else None
                    f = matrix_free_floor(pde, grid, u, u[0], LossWeights(1.0, 1.0, 1.0), start=start)
                    res.append(f)
                row = {"grid": [nt, nx, nx], "stencil": stencil, "order": int(order), "start": start_name,
                       "floor_rel_l2": [r["rel_l2"] for r in res], "loss_true": [r["loss_true"] for r in res],
                       "loss_floor": [r["loss_floor"] for r in res], "gn_steps": [r["gn_steps"] for r in res],
                       "seconds": time.perf_counter() - t0}
                print(json.dumps(row), flush=True)
                rows.append(row)
    out = {"rows": rows, "samples": a.samples, "solve_nx": a.solve_nx, "t_end": 5.0, "viscosity": 1e-4}
    save(a.out, out)
    return out


if __name__ == "__main__":
    from pihc.training.errors import refuse_bad_input

    refuse_bad_input(main)  # bad input: one `error:` line and status 2, as `pihc` gives
