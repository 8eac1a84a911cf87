"""The Navier-Stokes generator: the Gaussian-process sampler, the pseudo-spectral solver, the file."""

import json

import h5py
import numpy as np
import pytest

from pihc import NavierStokes2D, navier_stokes_grid
from pihc.cli import main
from pihc.data.hdf5 import info, open_dataset, write_pdebench
from pihc.data.navier_stokes import (generate_navier_stokes, initial_vorticity, kernel_eigenvalues,
                                     solve_navier_stokes, spectral_resample)

TAU = 2.0 * np.pi


def kernel(dx, dy, l=0.8):
    return np.exp(-np.sin(np.pi * dx) ** 2 / (2 * l**2)) * np.exp(-np.sin(np.pi * dy) ** 2 / (2 * l**2))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_kernel_eigenvalues_are_those_of_the_dense_covariance():
    nx, ny = 8, 6
    x, y = np.meshgrid(np.arange(nx) / nx, np.arange(ny) / ny, indexing="ij")
    p = np.stack([x.ravel(), y.ravel()], -1)
    C = kernel(p[:, None, 0] - p[None, :, 0], p[:, None, 1] - p[None, :, 1])
    np.testing.assert_allclose(np.sort(kernel_eigenvalues(nx, ny).ravel()), np.linalg.eigvalsh(C), atol=1e-12)


def test_sampler_covariance_matches_the_kernel_after_mean_removal():
    """Empirical covariance at a few lags within 5 standard errors of k(d) - mean(k)."""
    n, nx = 3000, 16
    w = initial_vorticity(n, nx, nx, seed=11)
    np.testing.assert_allclose(w.mean(axis=(1, 2)), 0.0, atol=1e-14)  # the mean removed, sample by sample
    d = np.arange(nx) / nx
    mean_k = kernel(d[:, None], d[None, :]).mean()
    for lx, ly in [(0, 0), (1, 0), (0, 3), (5, 7), (8, 8)]:
        per_sample = (w * np.roll(w, (-lx, -ly), axis=(1, 2))).mean(axis=(1, 2))  # stationary: average over points
        se = per_sample.std(ddof=1) / np.sqrt(n)
        exact = kernel(lx / nx, ly / nx) - mean_k
        assert abs(per_sample.mean() - exact) < 5 * se, (lx, ly, per_sample.mean(), exact, se)
        assert se < 0.02  # the test has power: a kernel off by 0.1 would fail it


def test_samples_depend_on_the_seed_alone():
    a = initial_vorticity(5, 12, 10, seed=3)
    b = initial_vorticity(2, 12, 10, seed=6)
    np.testing.assert_array_equal(a[3:], b)
    assert a.shape == (5, 12, 10)


def test_spectral_resample_interpolates():
    rng = np.random.default_rng(0)
    for m, n in [(8, 32), (7, 21)]:
        w = rng.normal(size=(2, m, m))
        fine = spectral_resample(w, n, n)
        f = n // m
        np.testing.assert_allclose(fine[:, ::f, ::f], w, atol=1e-12)
    # A resolved trigonometric polynomial is reproduced exactly.
    x = np.arange(16) / 16
    g = lambda x: np.sin(TAU * 3 * x)[:, None] * np.cos(TAU * 2 * x)[None, :]  # noqa: E731
    np.testing.assert_allclose(spectral_resample(g(x)[None], 48, 48)[0], g(np.arange(48) / 48), atol=1e-12)


def test_taylor_green_decays_to_round_off():
    nu, m = 1e-2, 2
    x = np.arange(32) / 32
    w0 = np.sin(TAU * m * x)[:, None] * np.sin(TAU * m * x)[None, :]
    w = solve_navier_stokes(w0[None], NavierStokes2D(viscosity=nu), nt=6, t_end=1.0, solve_nx=32)[0]
    decay = np.exp(-2 * nu * (TAU * m) ** 2 * np.linspace(0, 1, 6))
    np.testing.assert_allclose(w, decay[:, None, None] * w0[None], atol=1e-13)


def test_time_stepping_converges_at_fourth_order():
    w0 = 2.0 * initial_vorticity(1, 32, 32, seed=1)  # stronger flow: larger time errors
    kw = dict(nt=3, t_end=1.0, solve_nx=32)
    pde = NavierStokes2D(viscosity=1e-3)
    ref = solve_navier_stokes(w0, pde, substeps=64, **kw)
    errs = [rel(solve_navier_stokes(w0, pde, substeps=s, **kw), ref) for s in (2, 4, 8)]
    order = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(order > 3.5), (errs, order)  # RK4 (>= 2 is the requirement)


def test_enstrophy_budget():
    """d/dt (1/2 <w^2>) = -nu <|grad w|^2>: the dealiased nonlinear term conserves enstrophy."""
    n, T, nt = 32, 1.0, 41
    w0 = 2.0 * initial_vorticity(1, n, n, seed=2)
    k = TAU * np.fft.fftfreq(n, 1.0 / n)
    for nu in (1e-2, 0.0):
        w = solve_navier_stokes(w0, NavierStokes2D(viscosity=nu), nt=nt, t_end=T, solve_nx=n)[0]
        wh = np.fft.fft2(w)
        Z = 0.5 * np.mean(w**2, axis=(1, 2))
        P = 0.5 * np.mean(np.abs(np.fft.ifft2(1j * k[:, None] * wh)) ** 2
                          + np.abs(np.fft.ifft2(1j * k[None, :] * wh)) ** 2, axis=(1, 2))
        from scipy.integrate import simpson

        lost = -2 * nu * simpson(P, x=np.linspace(0, T, nt))
        np.testing.assert_allclose(Z[-1] - Z[0], lost, rtol=1e-4, atol=1e-8 * Z[0])  # RK4 drift
        if nu:
            assert Z[0] - Z[-1] > 0.05 * Z[0]  # the budget is tested on a real loss


def test_coarse_output_agrees_with_a_resolution_converged_solve():
    """32^2 data solved at 64^2 (the default) is close to a 128^2 solve; a direct 32^2 solve is not."""
    w0 = initial_vorticity(1, 32, 32, seed=4)
    kw = dict(pde=NavierStokes2D(viscosity=1e-4), nt=11, t_end=2.5)
    converged = solve_navier_stokes(w0, solve_nx=128, **kw)
    default = solve_navier_stokes(w0, **kw)
    direct = solve_navier_stokes(w0, solve_nx=32, **kw)
    assert rel(default, converged) < 5e-5
    assert rel(direct, converged) > 100 * rel(default, converged)


def test_generate_open_load_round_trip(tmp_path):
    kw = dict(samples=3, nx=16, nt=5, t_end=0.5, viscosity=1e-3, seed=7, solve_nx=32, progress=False)
    p = generate_navier_stokes(tmp_path / "ns.h5", batch=2, **kw)
    ds = open_dataset(p)
    assert isinstance(ds.pde, NavierStokes2D) and ds.pde.viscosity == 1e-3
    assert ds.grid == navier_stokes_grid(5, 16, 16, 0.5)
    assert (ds.format, len(ds), ds.nt, ds.nx, ds.ny) == ("pihc", 3, 5, 16, 16)
    u = ds.load([0, 1, 2])
    ref = solve_navier_stokes(initial_vorticity(3, 16, 16, 7), NavierStokes2D(viscosity=1e-3), nt=5, t_end=0.5,
                              solve_nx=32)
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-6 * np.abs(ref).max())  # stored as float32
    with h5py.File(p) as f:
        assert f["0000/data"].shape == (5, 16, 16, 1)
        np.testing.assert_allclose(f["0002/grid/y"][()], np.arange(16) / 16)
    # The same samples whatever the batching, in float64 bit for bit.
    q = generate_navier_stokes(tmp_path / "ns64.h5", batch=3, dtype="float64", **kw)
    np.testing.assert_array_equal(open_dataset(q).load([2]), ref[2:])
    d = info(q)
    assert (d["samples"], d["nt"], d["nx"], d["ny"]) == (3, 5, 16, 16)
    assert d["pde"] == {"class": "NavierStokes2D", "constants": {"viscosity": 1e-3}}


def test_cli_generate_and_data_info(tmp_path, capsys):
    out = tmp_path / "ns.h5"
    rc = main(["generate", "navier-stokes", "--samples", "2", "--nx", "8", "--nt", "4", "--t-end", "0.3",
               "--viscosity", "1e-3", "--seed", "1", "--solve-nx", "16", "--out", str(out), "--quiet"])
    assert rc == 0 and out.is_file()
    capsys.readouterr()
    assert main(["data", "info", str(out), "--check"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["format"], d["samples"], d["nt"], d["nx"], d["ny"]) == ("pihc", 2, 4, 8, 8)
    assert d["pde"]["class"] == "NavierStokes2D" and d["bad_samples"] == []


@pytest.mark.parametrize("args,needle", [
    (["--nx", "16", "--solve-nx", "24"], "solve-nx"),
    (["--viscosity", "-1"], "viscosity"),
    (["--t-end", "0"], "t-end"),
    (["--nx", "2"], "nx"),
    (["--ny", "3"], "ny"),
])
def test_cli_refuses_bad_input_before_compute(tmp_path, capsys, args, needle):
    out = tmp_path / "ns.h5"
    rc = main(["generate", "navier-stokes", "--samples", "2", "--nt", "4", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and needle in err


def test_data_info_check_names_a_nan_sample(tmp_path, capsys):
    grid = navier_stokes_grid(3, 8, 8, 1.0)
    u = np.zeros((3,) + grid.shape)
    u[1, 2, 3, 4] = np.nan
    p = write_pdebench(tmp_path / "nan.h5", [u], grid, {"pde": {"viscosity": 1e-4}}, 3, pde=NavierStokes2D())
    assert main(["data", "info", str(p), "--check"]) == 1
    err = capsys.readouterr().err
    assert "0001" in err and "0000" not in err
    with pytest.raises(Exception, match="0001"):
        open_dataset(p).load([1])
