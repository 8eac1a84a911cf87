"""Data generator against independent references; HDF5 layout, reader errors, atomic writes."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.linalg

from pihc.data.diffusion_sorption import (generate_diffusion_sorption, initial_conditions,
                                          solve_diffusion_sorption)
from pihc.data.hdf5 import DataError, info, open_dataset
from pihc.pdes import DiffusionSorption, diffusion_sorption_grid

NX, GRID = 64, diffusion_sorption_grid(nt=11, nx=64, t_max=50.0)


def test_pdebench_initial_conditions_are_reproduced():
    u0 = initial_conditions(3, 8, seed=10)
    for i in range(3):
        np.random.seed(10 + i)
        assert np.all(u0[i] == np.random.uniform(0, 0.2))
    smooth = initial_conditions(4, 64, seed=0, family="smooth")
    assert smooth.min() >= 0 and smooth.max() <= 0.2 and np.ptp(smooth[0]) > 0
    with pytest.raises(ValueError, match="family"):
        initial_conditions(1, 8, family="nope")


@pytest.mark.parametrize("offset", [None, 0.0, 0.5 / 1024])
def test_no_sorption_matches_the_exact_linear_solution(offset):
    """k_f = 0: du/dt = D (A u + b) exactly; compare with expm of the augmented matrix.

    The ghost values are u_e + a (v - u_e) with a = dx / (dx/2 + offset):
    a = 1 (PDEBench's ghost cells on this grid) for offset None."""
    D, dx = 5e-4, 1.0 / NX
    pde = DiffusionSorption(freundlich_k=0.0, boundary_offset=offset)
    a = 1.0 if offset is None else dx / (dx / 2 + offset)
    A = (np.diag(-2.0 * np.ones(NX)) + np.diag(np.ones(NX - 1), 1) + np.diag(np.ones(NX - 1), -1))
    A[0, 0] += 1.0 - a  # left ghost u_0 + a (1 - u_0)
    A[-1, -1] += 1.0 - a  # right ghost u_{n-1} + a (D (u_{n-2} - u_{n-1}) / dx - u_{n-1})
    A[-1, -2] += a * D / dx
    A[-1, -1] -= a * D / dx
    A /= dx ** 2
    b = np.zeros(NX)
    b[0] = a / dx ** 2
    M = np.zeros((NX + 1, NX + 1))
    M[:NX, :NX], M[:NX, NX] = D * A, D * b
    u0 = np.full(NX, 0.1)
    exact = np.stack([(scipy.linalg.expm(M * t) @ np.append(u0, 1.0))[:NX] for t in GRID.coords("t")])
    got = solve_diffusion_sorption(u0[None], pde, GRID, rtol=1e-10, atol=1e-12)[0]
    assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 1e-7


def test_coarse_solves_converge_at_second_order_to_the_pdebench_grid():
    """Solved directly on 32..256 cells, the located ghost closure converges to
    the 1024-cell (PDEBench) solution at second order; PDEBench's closure applied
    on the coarse grid (boundary_offset=None) moves the boundary and is first order."""
    fine = diffusion_sorption_grid(nt=11, nx=1024)
    ref = solve_diffusion_sorption(np.full((1, 1024), 0.1), DiffusionSorption(), fine,
                                   rtol=1e-9, atol=1e-11)[0]
    nxs = np.array([32, 64, 128, 256])
    errs = {}
    for offset in (0.5 / 1024, None):
        pde = DiffusionSorption(boundary_offset=offset)
        errs[offset] = []
        for nx in nxs.tolist():
            g = diffusion_sorption_grid(nt=11, nx=nx)
            u = solve_diffusion_sorption(np.full((1, nx), 0.1), pde, g, rtol=1e-9, atol=1e-11)[0]
            r = fine.restrict(ref, fine.factors_to(g))
            errs[offset].append(np.linalg.norm(u[1:] - r[1:]) / np.linalg.norm(r[1:]))
    slope = lambda e: -np.polyfit(np.log(nxs), np.log(e), 1)[0]  # noqa: E731
    assert slope(errs[0.5 / 1024]) > 1.9, errs
    assert slope(errs[None]) < 1.3, errs
    assert errs[0.5 / 1024][-1] < 1e-4 < errs[None][-1]


def test_values_stay_in_unit_interval_and_mass_balances_boundary_fluxes():
    pde = DiffusionSorption()
    grid = diffusion_sorption_grid(nt=201, nx=NX, t_max=50.0)
    u0 = initial_conditions(2, NX, seed=3)
    u = solve_diffusion_sorption(u0, pde, grid, rtol=1e-10, atol=1e-12)
    # The right ghost ~ 0 (outflow) pulls u below c0 near x = 1, but never below 0.
    assert u.min() >= 0.0 and u.max() <= 1.0 + 1e-12 and u[:, -1, -1].min() < u0.min()
    D, dx = 5e-4, 1.0 / NX
    phi, rho, k, nf, eps = 0.29, 2880.0, 3.5e-4, 0.874, 1e-6
    S = u + (1 - phi) / phi * rho * k * ((u + eps) ** nf - eps ** nf)  # dS/du = R(u)
    mass = dx * S.sum(-1)
    ghost_l, ghost_r = pde.ghosts(u, dx)
    flux = D / dx * ((ghost_l - u[..., 0]) + (ghost_r - u[..., -1]))
    t = grid.coords("t")
    # The inflow flux is singular at t = 0; compare mass changes from t = 5 on
    # (trapezoid in time, error O(dt^2) on a smooth flux).
    i0 = 20
    for s in range(2):
        integral = np.concatenate([[0.0], np.cumsum(0.5 * (flux[s, i0 + 1:] + flux[s, i0:-1]) * np.diff(t[i0:]))])
        np.testing.assert_allclose(mass[s, i0:] - mass[s, i0], integral, rtol=2e-3, atol=1e-6)


def test_bdf_agrees_with_an_independent_radau_solve():
    u0 = initial_conditions(2, NX, seed=5)
    bdf = solve_diffusion_sorption(u0, DiffusionSorption(), GRID)  # the generator's defaults
    radau = solve_diffusion_sorption(u0, DiffusionSorption(), GRID, rtol=1e-11, atol=1e-13, method="Radau")
    assert np.linalg.norm(bdf - radau) / np.linalg.norm(radau) < 1e-5


def test_write_read_round_trip_in_pdebench_layout(tmp_path):
    path = generate_diffusion_sorption(tmp_path / "d.h5", samples=3, nx=NX, nt=11, t_max=50.0,
                                       seed=7, progress=False, workers=1)
    with h5py.File(path) as f:
        assert sorted(k for k in f.keys()) == ["0000", "0001", "0002"]
        assert f["0001/data"].shape == (11, NX, 1)
        np.testing.assert_allclose(f["0001/grid/x"][()], (np.arange(NX) + 0.5) / NX)
        np.testing.assert_allclose(f["0001/grid/t"][()], np.linspace(0, 50, 11))
        cfg = json.loads(f.attrs["config"])
        assert cfg["seed"] == 7 and cfg["pde"]["diffusivity"] == 5e-4 and f.attrs["format"] == "pihc"
    ds = open_dataset(path)
    assert ds.format == "pihc" and (ds.nt, ds.nx) == (11, NX) and len(ds) == 3
    direct = solve_diffusion_sorption(initial_conditions(3, 1024, seed=7), DiffusionSorption(),
                                      diffusion_sorption_grid(11, 1024, 50.0))
    fine = diffusion_sorption_grid(11, 1024, 50.0)
    expect = np.stack([fine.restrict(v, {"x": 1024 // NX}) for v in direct])
    np.testing.assert_allclose(ds.load([0, 1, 2]), expect, rtol=1e-12)


def _pdebench_file(path, n=3, bad=None):
    with h5py.File(path, "w") as f:
        for i in range(n):
            g = f.create_group(f"{i:04d}")
            d = np.full((5, 16, 1), 0.1, np.float32)
            if i == bad:
                d[2, 3, 0] = np.nan
            g.create_dataset("data", data=d)
            g.create_dataset("grid/x", data=((np.arange(16) + 0.5) / 16).astype(np.float32))
            g.create_dataset("grid/t", data=np.linspace(0, 500, 5).astype(np.float32))


def test_reads_pdebench_files_and_reports_bad_samples(tmp_path):
    p = tmp_path / "1D_diff-sorp_NA_NA.h5"
    _pdebench_file(p, bad=1)
    d = info(p, check=True)
    assert d["format"] == "pdebench" and (d["samples"], d["nt"], d["nx"]) == (3, 5, 16)
    assert d["bad_samples"] == ["0001"]
    ds = open_dataset(p)
    assert ds.pde == DiffusionSorption()  # PDEBench's constants when the file has none
    with pytest.raises(DataError, match="sample 0001 contains NaN"):
        ds.load([0, 1])
    r = subprocess.run([sys.executable, "-m", "pihc.cli", "data", "info", str(p), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "0001" in r.stderr and json.loads(r.stdout)["format"] == "pdebench"


def test_missing_and_malformed_files_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope.h5")
    p = tmp_path / "bad.h5"
    with h5py.File(p, "w") as f:
        f.create_group("0000").create_dataset("data", data=np.zeros((5, 16, 1)))
    with pytest.raises(DataError, match="sample 0000 lacks"):
        open_dataset(p)


def test_interrupted_generation_leaves_nothing_behind(tmp_path):
    target = tmp_path / "d.h5"
    target.write_bytes(b"previous content")

    def stop(done):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_diffusion_sorption(target, samples=8, nx=NX, nt=11, t_max=50.0, batch=4,
                                    progress=False, workers=1, callback=stop)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["d.h5"]
