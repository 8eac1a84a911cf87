"""Derivative operators against analytic derivatives.

Orders are *measured*: the slope of log(max error over all points, ends
included) against log(h) over several refinements must reach the design
order (within 0.2).  Polynomial exactness, spectral exactness, axis handling
and linearity are checked against independent references.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pihc.derivatives import derivative, diff1, diff2, diff2_ghost, spectral_diff
from pihc.grid import Axis

TWO_PI = 2.0 * np.pi


# A phase of 1 keeps the high derivatives non-zero at x = 0 and 1, so the
# one-sided end stencils show their leading error term.
def f(x):
    return np.sin(TWO_PI * x + 1.0) + x**3


def f1(x):
    return TWO_PI * np.cos(TWO_PI * x + 1.0) + 3.0 * x**2


def f2(x):
    return -TWO_PI**2 * np.sin(TWO_PI * x + 1.0) + 6.0 * x


def g(x):  # periodic on [0, 1)
    return np.sin(TWO_PI * x) + 0.5 * np.cos(2.0 * TWO_PI * x)


def g1(x):
    return TWO_PI * np.cos(TWO_PI * x) - TWO_PI * np.sin(2.0 * TWO_PI * x)


def g2(x):
    return -TWO_PI**2 * np.sin(TWO_PI * x) - 2.0 * TWO_PI**2 * np.cos(2.0 * TWO_PI * x)


def measured_order(op, exact_u, exact_du, kind, ns=(20, 40, 80, 160)):
    """Slope of log(max |op(u) - du|) vs log(h) on refinements of [0, 1]."""
    hs, errs = [], []
    for n in ns:
        ax = Axis("x", n, 0.0, 1.0, kind)
        x = ax.coords
        err = np.max(np.abs(np.asarray(op(jnp.asarray(exact_u(x)), ax)) - exact_du(x)))
        hs.append(ax.spacing)
        errs.append(err)
    return np.polyfit(np.log(hs), np.log(errs), 1)[0], errs


# ----------------------------------------------------------- measured orders

@pytest.mark.parametrize("kind", ["nodes", "cells"])
@pytest.mark.parametrize("order", [2, 4])
def test_diff1_converges_at_its_order_up_to_the_ends(kind, order):
    slope, errs = measured_order(lambda u, ax: diff1(u, 0, ax.spacing, order=order),
                                 f, f1, kind)
    assert slope > order - 0.2, (slope, errs)
    assert errs[-1] < (1e-2 if order == 2 else 1e-5)


@pytest.mark.parametrize("kind", ["nodes", "cells"])
def test_diff2_converges_at_second_order_up_to_the_ends(kind):
    slope, errs = measured_order(lambda u, ax: diff2(u, 0, ax.spacing), f, f2, kind)
    assert slope > 2 - 0.2, (slope, errs)
    assert errs[-1] < 5e-2


@pytest.mark.parametrize("order", [2, 4])
def test_periodic_diff1_converges_at_its_order(order):
    slope, errs = measured_order(
        lambda u, ax: diff1(u, 0, ax.spacing, periodic=True, order=order), g, g1, "periodic")
    assert slope > order - 0.2, (slope, errs)


def test_periodic_diff2_converges_at_second_order():
    slope, errs = measured_order(lambda u, ax: diff2(u, 0, ax.spacing, periodic=True),
                                 g, g2, "periodic")
    assert slope > 2 - 0.2, (slope, errs)


def test_diff2_ghost_with_exact_ghosts_is_second_order():
    def op(u, ax):
        h = ax.spacing
        x = ax.coords
        return diff2_ghost(u, 0, h, f(x[0] - h), f(x[-1] + h))

    slope, errs = measured_order(op, f, f2, "cells")
    assert slope > 2 - 0.2, (slope, errs)


# ------------------------------------------------- exactness on polynomials

@pytest.mark.parametrize("order, degree", [(2, 2), (4, 4)])
def test_diff1_is_exact_on_polynomials_of_its_degree(order, degree):
    ax = Axis("x", 11, -1.0, 2.0, "nodes")
    x = ax.coords
    c = np.arange(1.0, degree + 2.0)                      # 1 + 2x + 3x^2 + ...
    u = np.polyval(c[::-1], x)
    du = np.polyval(np.polyder(c[::-1]), x)
    np.testing.assert_allclose(diff1(jnp.asarray(u), 0, ax.spacing, order=order), du,
                               rtol=0, atol=1e-11)


def test_diff2_is_exact_on_cubics_including_the_ends():
    ax = Axis("x", 9, 0.0, 1.0, "cells")
    x = ax.coords
    u = 1.0 - 2.0 * x + 0.5 * x**2 + 4.0 * x**3
    np.testing.assert_allclose(diff2(jnp.asarray(u), 0, ax.spacing), 1.0 + 24.0 * x,
                               rtol=0, atol=1e-10)


# ------------------------------------------------------------------ spectral

@pytest.mark.parametrize("n", [32, 33])
@pytest.mark.parametrize("length", [1.0, 2.0 * np.pi])
def test_spectral_diff_is_exact_on_trigonometric_polynomials(n, length):
    x = np.arange(n) * length / n
    k = TWO_PI / length
    u = (0.3 + np.sin(k * x) + 0.5 * np.cos(3 * k * x) - 0.2 * np.sin(10 * k * x))
    du = (k * np.cos(k * x) - 1.5 * k * np.sin(3 * k * x) - 2.0 * k * np.cos(10 * k * x))
    d2u = (-k**2 * np.sin(k * x) - 4.5 * k**2 * np.cos(3 * k * x)
           + 20.0 * k**2 * np.sin(10 * k * x))
    scale1, scale2 = 10 * k, 100 * k**2
    np.testing.assert_allclose(spectral_diff(jnp.asarray(u), 0, length, 1) / scale1,
                               du / scale1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(spectral_diff(jnp.asarray(u), 0, length, 2) / scale2,
                               d2u / scale2, rtol=0, atol=1e-12)


def test_spectral_diff_nyquist_mode():
    # cos(pi n x) on n points of [0, 1): its first derivative vanishes at every
    # grid point, its second is -(pi n)^2 u.
    n = 16
    x = np.arange(n) / n
    u = np.cos(np.pi * n * x)
    np.testing.assert_allclose(spectral_diff(jnp.asarray(u), 0, 1.0, 1), 0.0, atol=1e-10)
    np.testing.assert_allclose(spectral_diff(jnp.asarray(u), 0, 1.0, 2), -(np.pi * n) ** 2 * u,
                               rtol=1e-12, atol=1e-9)


def test_spectral_diff_has_spectral_accuracy_on_exp_sin():
    errs = {1: [], 2: []}
    ns = (8, 16, 32)
    for n in ns:
        x = np.arange(n) / n
        u = np.exp(np.sin(TWO_PI * x))
        du = TWO_PI * np.cos(TWO_PI * x) * u
        d2u = TWO_PI**2 * (np.cos(TWO_PI * x) ** 2 - np.sin(TWO_PI * x)) * u
        errs[1].append(np.max(np.abs(spectral_diff(jnp.asarray(u), 0, 1.0, 1) - du)))
        errs[2].append(np.max(np.abs(spectral_diff(jnp.asarray(u), 0, 1.0, 2) - d2u)))
    for order, e in errs.items():
        # one doubling gains > 4 digits: faster than any algebraic order < 13
        assert e[0] / e[1] > 1e4, (order, e)
        assert e[2] < 1e-10 * TWO_PI**order, (order, e)


# --------------------------------------------------------- axes and linearity

def _ops():
    h = 0.1
    return {
        "diff1_o2": lambda u, a: diff1(u, a, h, order=2),
        "diff1_o4": lambda u, a: diff1(u, a, h, order=4),
        "diff1_periodic_o4": lambda u, a: diff1(u, a, h, periodic=True, order=4),
        "diff2": lambda u, a: diff2(u, a, h),
        "diff2_periodic": lambda u, a: diff2(u, a, h, periodic=True),
        "diff2_ghost": lambda u, a: diff2_ghost(u, a, h, 0.0, 0.0),
        "spectral1": lambda u, a: spectral_diff(u, a, 2.0, 1),
        "spectral2": lambda u, a: spectral_diff(u, a, 2.0, 2),
    }


@pytest.mark.parametrize("name", list(_ops()))
def test_operator_along_any_axis_equals_1d_per_line(name):
    op = _ops()[name]
    rng = np.random.default_rng(1)
    u = rng.normal(size=(5, 6, 7))
    op_1d = jax.jit(lambda line: op(line, 0))   # compiled once per line length
    for axis in (0, 1, 2):
        got = np.asarray(op(jnp.asarray(u), axis))
        moved = np.moveaxis(u, axis, -1)
        ref = np.empty_like(moved)
        for idx in np.ndindex(moved.shape[:-1]):
            ref[idx] = np.asarray(op_1d(jnp.asarray(moved[idx])))
        np.testing.assert_allclose(got, np.moveaxis(ref, -1, axis), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(op(jnp.asarray(u), -1), op(jnp.asarray(u), 2))


def test_diff2_ghost_ghost_arrays_per_line():
    rng = np.random.default_rng(2)
    u = rng.normal(size=(4, 6))
    lo, hi = rng.normal(size=4), rng.normal(size=4)
    h = 0.3
    got = np.asarray(diff2_ghost(jnp.asarray(u), 1, h, jnp.asarray(lo), jnp.asarray(hi)))
    for i in range(4):
        padded = np.concatenate([[lo[i]], u[i], [hi[i]]])
        ref = (padded[2:] - 2 * padded[1:-1] + padded[:-2]) / h**2
        np.testing.assert_allclose(got[i], ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("name", list(_ops()))
def test_operators_are_linear(name):
    op = _ops()[name]
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=(2, 8, 12))
    a, b = 1.7, -0.4
    lhs = op(jnp.asarray(a * u + b * v), 1)
    rhs = a * op(jnp.asarray(u), 1) + b * op(jnp.asarray(v), 1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-11)


def test_diff2_ghost_is_affine_in_u_and_ghosts():
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=(2, 10))
    op = lambda w, lo, hi: np.asarray(diff2_ghost(jnp.asarray(w), 0, 0.1, lo, hi))  # noqa: E731
    a, b = 0.6, 0.4                     # a + b = 1: an affine combination
    np.testing.assert_allclose(op(a * u + b * v, a * 1.0 + b * 3.0, a * -2.0 + b * 5.0),
                               a * op(u, 1.0, -2.0) + b * op(v, 3.0, 5.0), rtol=1e-12, atol=1e-10)


# --------------------------------------------------------- dispatch, errors

def test_derivative_dispatches_by_axis_kind():
    rng = np.random.default_rng(5)
    u = jnp.asarray(rng.normal(size=(6, 16)))
    per = Axis("x", 16, 0.0, 2.0, "periodic")
    np.testing.assert_allclose(derivative(u, 1, per, 2), spectral_diff(u, 1, 2.0, 2), atol=1e-12)
    np.testing.assert_allclose(derivative(u, 1, per, 1, spectral=False, accuracy=4),
                               diff1(u, 1, per.spacing, periodic=True, order=4), atol=1e-12)
    nod = Axis("t", 6, 0.0, 1.0)
    np.testing.assert_allclose(derivative(u, 0, nod, 1, accuracy=4),
                               diff1(u, 0, 0.2, order=4), atol=1e-12)
    np.testing.assert_allclose(derivative(u, 0, nod, 2), diff2(u, 0, 0.2), atol=1e-12)
    with pytest.raises(ValueError, match="order 3"):
        derivative(u, 0, nod, 3)


def test_bad_orders_and_short_axes_are_refused():
    u = jnp.zeros((4,))
    with pytest.raises(ValueError, match="order must be 2 or 4"):
        diff1(u, 0, 0.1, order=3)
    with pytest.raises(ValueError, match="at least 5"):
        diff1(u, 0, 0.1, order=4)
    with pytest.raises(ValueError, match="at least 4"):
        diff2(jnp.zeros((3,)), 0, 0.1)
