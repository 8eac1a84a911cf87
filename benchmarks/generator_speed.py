"""Speed and accuracy of the diffusion-sorption generator at 1024 x 101.

Compares, side by side in one run: one sample per stiff solve, batches of
4 and 16 (one solve each), and batches of 4 over a pool of worker processes,
against a reference solve at rtol 1e-11.  Prints and saves JSON.

    python benchmarks/generator_speed.py --samples 32
    python benchmarks/generator_speed.py --samples 4 --reference-samples 1   # quick check
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import save


def main(argv=None) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from pihc import DiffusionSorption
    # The data package's public API (the names in its modules' __all__).
    from pihc.data.diffusion_sorption import (generate_diffusion_sorption, initial_conditions,
                                              solve_diffusion_sorption)
    from pihc.data.hdf5 import open_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--reference-samples", type=int, default=4)
    p.add_argument("--out", default="benchmarks/out/generator_speed.json")
    a = p.parse_args(argv)

    pde = DiffusionSorption()
    u0 = initial_conditions(a.samples, 1024, seed=0)
    t0 = time.perf_counter()
    ref = solve_diffusion_sorption(u0[: a.reference_samples], pde, rtol=1e-11, atol=1e-13)
    ref_s = (time.perf_counter() - t0) / a.reference_samples

    def err(u):
        return float(np.linalg.norm(u[: a.reference_samples] - ref) / np.linalg.norm(ref))

    rows = []
    for batch in (1, 4, 16):
        t0 = time.perf_counter()
        u = np.concatenate([solve_diffusion_sorption(u0[i:i + batch], pde) for i in range(0, a.samples, batch)])
        rows.append({"variant": f"in-process, batch {batch}", "s_per_trajectory": (time.perf_counter() - t0) / a.samples,
                     "rel_l2_vs_reference": err(u)})
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = generate_diffusion_sorption(Path(d) / "g.h5", samples=a.samples, progress=False,
                                           workers=os.cpu_count())
        dt = time.perf_counter() - t0
        u = open_dataset(path).load(np.arange(a.reference_samples))
    rows.append({"variant": f"generate_diffusion_sorption (batch 4, {os.cpu_count()} workers, incl. HDF5 write)",
                 "s_per_trajectory": dt / a.samples, "rel_l2_vs_reference": err(u)})
    out = {"grid": [101, 1024], "samples": a.samples, "reference": {"rtol": 1e-11, "s_per_trajectory": ref_s},
           "cores": os.cpu_count(), "rows": rows}
    for r in rows:
        print(f"{r['variant']:<75} {r['s_per_trajectory']:.3f} s/traj   rel L2 {r['rel_l2_vs_reference']:.1e}")
    save(a.out, out)
    return out


if __name__ == "__main__":
    main()
