"""Grid metadata against hand-computed coordinates, spacings and transfers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.grid import Axis, Grid, GridError


# --------------------------------------------------------------- coordinates

def test_nodes_include_both_ends():
    a = Axis("t", 5, 0.0, 2.0)
    assert a.kind == "nodes" and not a.periodic
    assert a.spacing == 0.5
    np.testing.assert_allclose(a.coords, [0.0, 0.5, 1.0, 1.5, 2.0], rtol=0, atol=1e-15)


def test_cells_are_centres():
    a = Axis("x", 4, 0.0, 1.0, "cells")
    assert a.spacing == 0.25
    np.testing.assert_allclose(a.coords, [0.125, 0.375, 0.625, 0.875], rtol=0, atol=1e-15)
    b = Axis("x", 3, -1.0, 2.0, "cells")
    assert b.spacing == 1.0
    np.testing.assert_allclose(b.coords, [-0.5, 0.5, 1.5], rtol=0, atol=1e-15)


def test_periodic_excludes_right_end():
    a = Axis("y", 4, 0.0, 2 * np.pi, "periodic")
    assert a.periodic
    assert a.spacing == pytest.approx(np.pi / 2, rel=1e-15)
    np.testing.assert_allclose(a.coords, [0.0, np.pi / 2, np.pi, 3 * np.pi / 2], rtol=1e-15)


def test_grid_mesh_and_lookups():
    g = Grid((Axis("t", 3, 0.0, 1.0), Axis("x", 2, 0.0, 1.0, "cells")))
    assert g.shape == (3, 2) and g.ndim == 2 and g.size == 6
    assert g.names == ("t", "x") and g.index("x") == 1
    assert g.spacing("t") == 0.5 and g.spacing("x") == 0.5
    expected = np.array([[[0.0, 0.25], [0.0, 0.75]],
                         [[0.5, 0.25], [0.5, 0.75]],
                         [[1.0, 0.25], [1.0, 0.75]]])
    np.testing.assert_allclose(g.mesh(), expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(g.coords("x"), [0.25, 0.75])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(name="x", n=4, lo=0.0, hi=1.0, kind="edges"), "kind"),
    (dict(name="x", n=1, lo=0.0, hi=1.0), "at least 2"),
    (dict(name="x", n=4, lo=1.0, hi=1.0), "hi > lo"),
])
def test_axis_rejects_bad_arguments(kwargs, fragment, unchecked):
    with pytest.raises(GridError, match=fragment) as info:
        Axis(**kwargs)
    assert "'x'" in str(info.value)


def test_grid_rejects_duplicate_and_unknown_names():
    with pytest.raises(GridError, match="unique"):
        Grid((Axis("x", 4, 0, 1), Axis("x", 4, 0, 1)))
    with pytest.raises(GridError, match="at least one"):
        Grid(())
    g = Grid((Axis("t", 4, 0, 1),))
    with pytest.raises(GridError, match="'z'"):
        g.index("z")


# ------------------------------------------------------ coarsen and restrict

def test_coarsen_keeps_interval_and_scales_spacing():
    g = Grid((Axis("t", 9, 0.0, 1.0), Axis("x", 8, 0.0, 1.0, "cells"),
              Axis("y", 8, 0.0, 2.0, "periodic")))
    c = g.coarsen({"t": 4, "x": 2, "y": 4})
    assert c.shape == (3, 4, 2)
    assert c.spacing("t") == 4 * g.spacing("t")
    assert c.spacing("x") == 2 * g.spacing("x")
    assert c.spacing("y") == 4 * g.spacing("y")
    # nodes and periodic points: the coarse points are every k-th fine point
    np.testing.assert_allclose(c.coords("t"), g.coords("t")[::4], rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.coords("y"), g.coords("y")[::4], rtol=0, atol=1e-15)
    # cells: the coarse centres are the means of each group of fine centres
    np.testing.assert_allclose(c.coords("x"), [0.125, 0.375, 0.625, 0.875], atol=1e-15)
    np.testing.assert_allclose(c.coords("x"), g.coords("x").reshape(4, 2).mean(1), atol=1e-15)
    assert g.coarsen({}) == g


def test_coarsen_refuses_non_divisible_and_unknown():
    g = Grid((Axis("t", 10, 0.0, 1.0), Axis("x", 9, 0.0, 1.0, "cells")))
    with pytest.raises(GridError, match="'t'"):
        g.coarsen({"t": 2})          # n - 1 = 9 nodes-intervals, not divisible by 2
    with pytest.raises(GridError, match="'x'"):
        g.coarsen({"x": 2})
    with pytest.raises(GridError, match=">= 1"):
        g.coarsen({"x": 0})
    with pytest.raises(GridError, match="unknown"):
        g.coarsen({"z": 3})


def _two_d_grid():
    return Grid((Axis("t", 9, 0.0, 2.0), Axis("x", 12, -1.0, 2.0, "cells")))


def test_restrict_linear_field_is_exact_at_coarse_points():
    # For a linear function the mean over a group of cells equals the value
    # at the group's centre, so restriction must reproduce the function
    # evaluated on the coarse grid (striding cells would be off by (k-1)h/2).
    g = _two_d_grid()
    factors = {"t": 4, "x": 3}
    c = g.coarsen(factors)
    f = lambda m: 2.0 + 3.0 * m[..., 0] - 5.0 * m[..., 1]  # noqa: E731
    np.testing.assert_allclose(g.restrict(f(g.mesh()), factors), f(c.mesh()),
                               rtol=0, atol=1e-13)


def test_restrict_is_group_mean_and_every_kth_node():
    g = _two_d_grid()
    rng = np.random.default_rng(0)
    u = rng.normal(size=g.shape + (2,))         # a trailing channel axis is carried along
    out = g.restrict(u, {"t": 4, "x": 3})
    assert out.shape == (3, 4, 2)
    for i, ti in enumerate(range(0, 9, 4)):
        for j in range(4):
            np.testing.assert_allclose(out[i, j], u[ti, 3 * j:3 * j + 3].mean(axis=0),
                                       rtol=1e-14, atol=1e-15)
    # periodic axes are subsampled
    p = Grid((Axis("y", 8, 0.0, 1.0, "periodic"),))
    v = rng.normal(size=8)
    np.testing.assert_array_equal(p.restrict(v, {"y": 2}), v[::2])


def test_restrict_nonlinear_cells_average_not_stride():
    g = Grid((Axis("x", 8, 0.0, 1.0, "cells"),))
    x = g.coords("x")
    out = g.restrict(x**2, {"x": 4})
    # mean of x_i^2 over each group, by hand
    np.testing.assert_allclose(out, [np.mean(x[:4] ** 2), np.mean(x[4:] ** 2)], rtol=1e-14)
    # differs from the centre value by the variance of the group (h^2 (k^2-1)/12)
    h = g.spacing("x")
    np.testing.assert_allclose(out - np.array([0.25, 0.75]) ** 2, h**2 * (16 - 1) / 12,
                               rtol=1e-12)


def test_restrict_is_the_same_on_numpy_and_inside_jit():
    fine = Grid((Axis("t", 9, 0.0, 40.0, "nodes"), Axis("x", 32, 0.0, 1.0, "cells")))
    x = np.random.default_rng(0).normal(size=fine.shape)
    f = {"t": 2, "x": 4}
    ref = fine.restrict(x, f)
    assert ref.shape == (5, 8)
    np.testing.assert_allclose(ref[1, 2], x[2, 8:12].mean(), rtol=1e-14)  # every 2nd time, 4-cell averages
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: fine.restrict(v, f))(jnp.asarray(x))), ref, rtol=1e-14)
    np.testing.assert_allclose(fine.restrict(x[:1], f)[0], x[0].reshape(8, 4).mean(1), rtol=1e-14)


# ----------------------------------------------------------------- factors_to

def test_factors_to_finds_the_integer_factors():
    fine = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 1024, 0.0, 1.0, "cells")))
    coarse = Grid((Axis("t", 26, 0.0, 500.0), Axis("x", 256, 0.0, 1.0, "cells")))
    factors = fine.factors_to(coarse)
    assert factors == {"t": 4, "x": 4}
    assert fine.coarsen(factors) == coarse
    assert fine.factors_to(fine) == {"t": 1, "x": 1}


def test_factors_to_refuses_non_integer_ratio_naming_the_axis():
    fine = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 1000, 0.0, 1.0, "cells")))
    coarse = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 300, 0.0, 1.0, "cells")))
    with pytest.raises(GridError, match="axis 'x'"):
        fine.factors_to(coarse)
    # a finer "model" grid than the data is not an integer coarsening either
    with pytest.raises(GridError, match="axis 'x'"):
        coarse.factors_to(fine)
    t_bad = Grid((Axis("t", 30, 0.0, 500.0), Axis("x", 1000, 0.0, 1.0, "cells")))
    with pytest.raises(GridError, match="axis 't'"):
        fine.factors_to(t_bad)


def test_factors_to_refuses_different_interval_or_kind():
    fine = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 64, 0.0, 1.0, "cells")))
    other_t = Grid((Axis("t", 101, 0.0, 250.0), Axis("x", 64, 0.0, 1.0, "cells")))
    with pytest.raises(GridError, match="axis 't'.*same interval"):
        fine.factors_to(other_t)
    other_kind = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 64, 0.0, 1.0, "periodic")))
    with pytest.raises(GridError, match="axis 'x'"):
        fine.factors_to(other_kind)
    other_names = Grid((Axis("t", 101, 0.0, 500.0), Axis("y", 64, 0.0, 1.0, "cells")))
    with pytest.raises(GridError, match="different axes"):
        fine.factors_to(other_names)


# ------------------------------------------------------- check, serialisation

def test_check_accepts_matching_and_raises_on_mismatch():
    g = _two_d_grid()
    g.check(np.zeros((9, 12)))
    g.check(np.zeros((9, 12, 5)), channels=1)
    with pytest.raises(GridError, match=r"\(9, 11\).*expected \(9, 12\)"):
        g.check(np.zeros((9, 11)), what="u")
    with pytest.raises(GridError, match="basis"):
        g.check(np.zeros((9, 12, 5)), what="basis")      # channel axis not declared
    with pytest.raises(GridError, match="channel"):
        g.check(np.zeros((9, 12)), channels=1)


def test_dict_round_trip_through_json():
    g = Grid((Axis("t", 101, 0.0, 500.0), Axis("x", 1024, 0.0, 1.0, "cells"),
              Axis("y", 16, -np.pi, np.pi, "periodic")))
    d = json.loads(json.dumps(g.to_dict()))
    h = Grid.from_dict(d)
    assert h == g and hash(h) == hash(g)
    np.testing.assert_array_equal(h.coords("y"), g.coords("y"))
