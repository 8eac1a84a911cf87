"""Accuracy and speed of the Navier-Stokes generator (64 x 64 x 64 snapshots, T = 5, nu = 1e-4).

Accuracy: every snapshot of ``--accuracy-samples`` trajectories, relative L2
against a 256^2 solve (dt <= 0.01) of the same band-limited initial
conditions, for the defaults (solve at 64^2) and ``--solve-nx 128``.  That the
256^2 reference is converged is shown by the successive differences
64 -> 128 -> 256 (spectral convergence: each doubling divides the error by
a large factor) and by the 256^2 solve with half its time step.  Also: a
256^2 output solved at 128^2 and spectrally padded, against the direct 256^2
solve.  Speed: seconds per trajectory of a vmapped batch (after
compilation), and the predicted time of 4000.  Prints and saves JSON.

    python benchmarks/ns_generator.py
    python benchmarks/ns_generator.py --accuracy-samples 1 --speed-samples 8   # quick check
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from _record import save


def snapshot_rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relative L2 of every snapshot, ``(n, nt)``."""
    n, nt = a.shape[:2]
    d = np.linalg.norm((a - b).reshape(n, nt, -1), axis=-1)
    return d / np.linalg.norm(b.reshape(n, nt, -1), axis=-1)


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc import NavierStokes2D
    from pihc.data.navier_stokes import (default_solve_nx, default_substeps, initial_vorticity,
                                         solve_navier_stokes, spectral_resample)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accuracy-samples", type=int, default=4)
    p.add_argument("--speed-samples", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="benchmarks/out/ns_generator.json")
    a = p.parse_args(argv)

    nt, nx, T = 64, 64, 5.0
    pde = NavierStokes2D(viscosity=1e-4)
    kw = dict(nt=nt, t_end=T)
    w0 = initial_vorticity(a.accuracy_samples, nx, nx, seed=0)
    solves = {}
    for snx in (64, 128, 256):
        solves[snx] = solve_navier_stokes(w0, pde, solve_nx=snx, **kw)
    half = solve_navier_stokes(w0, pde, solve_nx=256, substeps=2 * default_substeps(nt, T, 256), **kw)
    ref = solves[256]
    rel = {snx: snapshot_rel(solves[snx], ref) for snx in (64, 128)}
    out = {
        "grid": [nt, nx, nx], "t_end": T, "viscosity": 1e-4, "accuracy_samples": a.accuracy_samples,
        "substeps": {str(n): default_substeps(nt, T, n) for n in (64, 128, 256)},
        "default_solve_nx": default_solve_nx(nx),
        "rel_l2_max_default_vs_256": float(rel[64].max()),
        "rel_l2_final_default_vs_256": float(rel[64][:, -1].max()),
        "rel_l2_max_solve128_vs_256": float(rel[128].max()),
        "reference_check": {"rel_l2_max_256_vs_256_half_dt": float(snapshot_rel(half, ref).max())},
    }

    # 256^2 output: a direct 256^2 solve against a 128^2 solve padded spectrally.
    w256 = initial_vorticity(1, 256, 256, seed=0)
    direct = solve_navier_stokes(w256, pde, solve_nx=256, **kw)
    coarse = solve_navier_stokes(w256[:, ::2, ::2], pde, solve_nx=128, **kw)
    padded = spectral_resample(coarse, 256, 256)
    out["rel_l2_max_256_padded_from_128"] = float(snapshot_rel(padded, direct).max())
    # The initial condition sampled at 256 is band-limited: its 128-point samples lose nothing.
    out["ic_256_vs_padded_128_samples"] = float(np.abs(spectral_resample(w256[:, ::2, ::2], 256, 256) - w256).max())

    # Speed: a vmapped batch after compilation.
    speed = {}
    for snx in (64, 128):
        w = initial_vorticity(a.speed_samples, nx, nx, seed=100)
        solve_navier_stokes(w[: a.batch], pde, solve_nx=snx, **kw)  # compile
        t0 = time.perf_counter()
        for s in range(0, a.speed_samples, a.batch):
            solve_navier_stokes(w[s:s + a.batch], pde, solve_nx=snx, **kw)
        per = (time.perf_counter() - t0) / a.speed_samples
        speed[str(snx)] = {"s_per_trajectory": per, "predicted_4000_min": 4000 * per / 60}
    out["speed"] = speed
    out["batch"] = a.batch
    out["cpus"] = os.cpu_count()
    save(a.out, out, echo=True)
    return out


if __name__ == "__main__":
    main()
