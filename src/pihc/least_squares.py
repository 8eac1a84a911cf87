r"""Differentiable nonlinear least squares: a Levenberg-Marquardt solver object and an adjoint.

Solves

.. math::  w^* = \arg\min_w \tfrac12 \lVert r(w, \theta) \rVert_2^2

for a residual ``r = fn(w, args)`` with a few to a few hundred unknowns and up
to millions of rows.  As in optimistix, a problem, a solver object
(:class:`LevenbergMarquardt`: its tolerances and damping) and an adjoint
object (:mod:`pihc.adjoint`: how the solution is differentiated) go in, and a
typed :class:`Solution` comes out.

Each iteration forms the Gauss-Newton matrix ``A = J^T J`` (n x n) and
gradient ``g = J^T r`` and solves the damped system
``(A + mu diag(A)) delta = -g`` by Cholesky; with n << m this costs
O(m n^2), dominated by forming ``A``.  The solver's iterations are never
differentiated: gradients come from the implicit function theorem at ``w*``
(:class:`~pihc.adjoint.ImplicitAdjoint`).

A solve that does not converge is reported by ``Solution.status`` and has
*zero* gradient (the implicit function theorem does not hold away from a
stationary point), so callers must look at ``status``: the trainer counts
and excludes such solves.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from .dense import solve_spd

__all__ = ["LevenbergMarquardt", "PrecisionError", "RESULTS", "Solution", "least_squares", "require_x64"]


class RESULTS(enum.IntEnum):
    """Status codes of a solve (``Solution.status``)."""

    successful = 0
    max_steps_reached = 1
    nonfinite = 2

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    RESULTS.successful: "converged",
    RESULTS.max_steps_reached: "did not converge within max_steps; raise max_steps or loosen rtol/atol",
    RESULTS.nonfinite: "the residual, its Jacobian or the solution is NaN or infinite;"
                       " check the inputs (e.g. the network's basis) for NaN/Inf",
}


class PrecisionError(RuntimeError):
    """float64 is required but JAX runs in float32."""


def require_x64() -> None:
    """Raise :class:`PrecisionError` unless ``jax_enable_x64`` is on."""
    if not jax.config.read("jax_enable_x64"):
        raise PrecisionError(
            "pihc's solver layer runs in float64, but JAX is in float32 mode. Call"
            " pihc.enable_x64() (or set JAX_ENABLE_X64=1) before creating arrays.")


class Solution(eqx.Module):
    """Result of a solve.

    Attributes:
        value: the minimiser ``w*``, shape ``(n,)`` (a leading batch axis under ``vmap``).
        num_steps: Levenberg-Marquardt iterations taken.
        residual_norm: ``||r(w*)||_2``.
        gradient_norm: ``||J^T r||_inf`` at ``w*``.
        status: a :class:`RESULTS` code (``0`` = converged).
    """

    value: Float[Array, "*batch n"]
    num_steps: Int[Array, "*batch"]
    residual_norm: Float[Array, "*batch"]
    gradient_norm: Float[Array, "*batch"]
    status: Int[Array, "*batch"]

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        return self.status == RESULTS.successful


NormalFn = Callable[[Float[Array, " n"]], tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]]
HessianFn = Callable[[Float[Array, " n"]], Float[Array, "n n"]]


class LevenbergMarquardt(eqx.Module):
    r"""Levenberg-Marquardt with Marquardt's scaling and Nielsen's damping update.

    Each step solves ``(A + mu diag A) d = -g`` (``A = J^T J``, ``g = J^T r``)
    by Cholesky.  A step is accepted when it lowers the cost; ``mu`` then
    shrinks smoothly (by at most 3x), and doubles-and-more after a rejected
    step.  The solve has converged when the Gauss-Newton step is small,
    ``|A^{-1} g|_inf <= atol + rtol |w|_inf``: cost comparisons are not used,
    because they resolve ``w`` only to ``sqrt(eps)``.

    Args:
        max_steps: iteration cap; hitting it gives status ``max_steps_reached``.
        rtol, atol: the convergence test above.
        damping: the initial ``mu``, relative to ``diag(A)``.  The default
            starts nearly undamped (Gauss-Newton): the constraint layer starts
            each solve from the fit of its linear rows, where its problems are
            close to linear, and a textbook start of 1e-3 would hold its first
            steps back (Nielsen's update lowers ``mu`` by at most 3x per
            step).  A step that fails raises the damping, so far from a
            solution the solver still moves to gradient descent.
        second_order: given the exact Hessian ``H`` of the cost (``solve``'s
            ``hessian``), switch to a Newton-type model once Gauss-Newton
            converges slowly.  With a non-zero residual at the solution,
            Gauss-Newton converges only linearly, at a rate set by the
            neglected part ``S = H - J^T J``.  When an accepted step's
            Gauss-Newton step is still more than ``second_order`` times the
            previous one and already below 5% of ``|w|_inf``, ``S`` is
            evaluated there once and the remaining steps keep the model
            ``M = A + S`` of that point, the exact Hessian there (a chord,
            or simplified, Newton method): each of them forms only the cost
            and the gradient, not ``A``, and near the solution the
            Hessian changes little, so the convergence is linear with a
            small rate.  There the convergence test measures the model's
            step ``|M^{-1} g|_inf`` instead of the Gauss-Newton step.  Once
            a step is rejected or shrinks the model's step by less than
            0.3 (a switch where the Hessian still changes, as early in
            training), the remaining steps re-form ``A`` at every step and
            keep ``S``.  ``None``: Gauss-Newton throughout.
    """

    max_steps: int = 100
    rtol: float = 1e-8
    atol: float = 1e-12
    damping: float = 1e-10
    second_order: float | None = 0.2

    def __check_init__(self):
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}")
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol and atol are both 0: the solver could never stop; give one of them > 0")
        if not (isinstance(self.damping, (int, float)) and math.isfinite(self.damping) and self.damping > 0):
            raise ValueError(f"damping must be a positive number, got {self.damping!r}")
        if self.second_order is not None and not (
                isinstance(self.second_order, (int, float)) and not isinstance(self.second_order, bool)
                and 0 <= self.second_order < 1):
            raise ValueError(f"second_order must be a number in [0, 1) or None, got {self.second_order!r}")

    def solve(self, normal_equations: NormalFn, w0: Float[Array, " n"], hessian: HessianFn | None = None,
              curvature: HessianFn | None = None) -> Solution:
        """Minimise from ``w0``, given ``w -> (1/2 ||r||^2, J^T r, J^T J)``; not differentiated.

        ``hessian`` (optional): ``w -> H``, the exact Hessian of the cost, for
        ``second_order``; or ``curvature``: ``w -> S = H - J^T J`` directly,
        where that is cheaper than ``H`` (it takes precedence).  The loop carries only the normal equations, never
        ``r`` or ``J``: with m >> n rows, carrying and selecting the m x n
        Jacobian every iteration costs more memory traffic than forming
        ``A``.  jit- and vmap-compatible (under vmap each problem stops
        updating once it has converged).  The Gauss-Newton steps and the
        steps with ``S`` are two loops, with ``S`` evaluated between them:
        under vmap a branch inside one loop would evaluate ``S`` at every
        step of every problem.
        """
        w0 = jax.lax.stop_gradient(w0)
        eps = jnp.finfo(w0.dtype).eps
        cost0, g0, A0 = normal_equations(w0)
        finite0 = _finite(cost0, g0, A0)
        newton = (hessian is not None or curvature is not None) and self.second_order is not None

        def gn_size(w, A, g):
            return jnp.max(jnp.abs(_gauss_newton_step(A, g)))

        def converged(w, size):
            return size <= self.atol + self.rtol * jnp.max(jnp.abs(w))

        size0 = gn_size(w0, A0, g0)

        def model_size(M, A, g):
            # The frozen model's step; the Gauss-Newton one where M is not positive definite.
            step = _gauss_newton_step(M, g)
            return jnp.max(jnp.abs(jnp.where(jnp.all(jnp.isfinite(step)), step, _gauss_newton_step(A, g))))
        init = dict(w=w0, g=g0, A=A0, cost=cost0,
                    mu=jnp.asarray(self.damping, w0.dtype), nu=jnp.asarray(2.0, w0.dtype),
                    step=jnp.asarray(0), done=converged(w0, size0) | ~finite0, size=size0,
                    slow=jnp.asarray(False))

        def body(s, S, frozen=False):
            M = s["A"] if S is None else s["A"] + S  # S None: Gauss-Newton, the model is A
            delta = _damped_step(M, s["g"], s["mu"], jnp.diag(s["A"]))
            if S is not None:
                # A model A + S that the damping does not make positive definite: a Gauss-Newton step.
                # (Under vmap both steps are computed, so the Gauss-Newton loop has its own body.)
                fallback = ~jnp.all(jnp.isfinite(delta))
                delta = jnp.where(fallback, _damped_step(s["A"], s["g"], s["mu"], jnp.diag(s["A"])), delta)
                M = jnp.where(fallback, s["A"], M)
            w_new = s["w"] + delta
            cost_new, g_new, A_new = normal_equations(w_new)
            if frozen:
                # The model stays that of the switch: A at the new point is never read, so XLA never
                # forms it (the m x n^2 product that dominates a step), only the cost and gradient.
                A_new = s["A"]
            # Predicted reduction of the quadratic model: -(g.d + d.M.d / 2) > 0.
            pred = -(s["g"] @ delta + 0.5 * delta @ (M @ delta))
            rho = (s["cost"] - cost_new) / jnp.where(pred > 0, pred, 1.0)
            # Below ~eps * cost the change in cost is rounding noise and rho
            # is meaningless; there the quadratic model is trusted.
            tiny = pred <= 16.0 * eps * s["cost"]
            ok = _finite(cost_new, g_new, A_new) & (pred > 0) & ((rho > 0) | tiny)
            mu_ok = s["mu"] * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * jnp.clip(rho, 0.0, 1.0) - 1.0) ** 3)
            size_new = model_size(M, s["A"], g_new) if frozen else gn_size(w_new, A_new, g_new)
            done = ok & converged(w_new, size_new)
            if frozen:
                # The frozen model no longer serves: a rejected step, or a step that shrank by less
                # than _CHORD_RATE (a switch far from the solution, where the Hessian still changes).
                slow = ~done & (~ok | (size_new > _CHORD_RATE * s["size"]))
            else:
                # Linear convergence: the Gauss-Newton step shrank by less than
                # second_order, and w is already close (5% of |w|).
                slow = ok & ~done & (size_new > (self.second_order or 0.0) * s["size"]) \
                    & (size_new < 0.05 * jnp.max(jnp.abs(w_new)))
            pick = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
            return dict(
                w=pick(w_new, s["w"]), g=pick(g_new, s["g"]), A=pick(A_new, s["A"]),
                cost=pick(cost_new, s["cost"]),
                mu=pick(mu_ok, s["mu"] * s["nu"]), nu=pick(jnp.asarray(2.0, w0.dtype), 2.0 * s["nu"]),
                step=s["step"] + 1, done=done, size=pick(size_new, s["size"]), slow=slow)

        running = lambda s: ~s["done"] & (s["step"] < self.max_steps)  # noqa: E731
        zero = jnp.zeros_like(A0)
        if not newton:
            s = jax.lax.while_loop(running, lambda s: body(s, None), init)
        else:
            s = jax.lax.while_loop(lambda s: running(s) & ~s["slow"], lambda s: body(s, None), init)

            # S at the switch, for a problem still running (zeros for one that
            # is done).  A loop of at most one step, not a cond: under vmap a
            # cond evaluates both branches, a loop runs only while some
            # problem needs it, so problems that all converged in the first
            # loop never pay for the Hessian.
            def switch(c):
                w = c["s"]["w"]
                S = curvature(w) if curvature is not None else hessian(w) - c["s"]["A"]
                return dict(c, S=jnp.where(jnp.all(jnp.isfinite(S)), S, zero), have=jnp.asarray(True))

            c = jax.lax.while_loop(lambda c: running(c["s"]) & ~c["have"], switch,
                                   dict(s=s, S=zero, have=jnp.asarray(False)))
            # The steps with the frozen model while it converges fast, then (if some problem still
            # runs) with A re-formed at every step.
            s = jax.lax.while_loop(lambda s: running(s) & ~s["slow"], lambda s: body(s, c["S"], frozen=True),
                                   dict(c["s"], slow=jnp.asarray(False)))
            s = jax.lax.while_loop(running, lambda s: body(s, c["S"]), s)
        # A solution that is not finite is never "converged" (a NaN in a
        # problem's arrays can leave A, g and the cost finite but w not).
        finite = finite0 & jnp.all(jnp.isfinite(s["w"])) & jnp.isfinite(s["cost"])
        status = jnp.where(~finite, RESULTS.nonfinite,
                           jnp.where(s["done"], RESULTS.successful, RESULTS.max_steps_reached))
        return Solution(s["w"], s["step"], jnp.sqrt(2.0 * s["cost"]), jnp.max(jnp.abs(s["g"])),
                        status.astype(jnp.int32))


# The second phase keeps its frozen model while each step shrinks the model's step at least this much
# (about 0.1 near the solution on the Navier-Stokes layer); slower, it re-forms A at every step.
_CHORD_RATE = 0.3


def _finite(cost, g, A):
    return jnp.isfinite(cost) & jnp.all(jnp.isfinite(g)) & jnp.all(jnp.isfinite(A))


def _damped_step(M, g, mu, d):
    # Marquardt's scaling (mu * diag(A), d = diag(A) of the Gauss-Newton
    # matrix, non-negative) makes the step invariant to the scale of each
    # unknown; clip the diagonal so a zero column still damps.  M is the
    # model's matrix (A, or A + S).
    d = jnp.maximum(d, 1e-12 * jnp.max(d) + jnp.finfo(M.dtype).tiny)
    return -solve_spd(M + mu * jnp.diag(d), g)


def _gauss_newton_step(A, g):
    # Smallest damping that keeps the Cholesky factorisation of a
    # (numerically) singular A defined; negligible for well-posed problems.
    eps = jnp.finfo(A.dtype).eps * jnp.max(jnp.diag(A)) + jnp.finfo(A.dtype).tiny
    return -solve_spd(A + eps * jnp.eye(A.shape[0], dtype=A.dtype), g)


def least_squares(fn: Callable[[Float[Array, " n"], PyTree], Float[Array, " m"]],
                  w0: Float[Array, " n"], args: PyTree = None, *,
                  solver: LevenbergMarquardt = LevenbergMarquardt(), adjoint: Any = None,
                  jac: Callable[[Float[Array, " n"], PyTree], tuple[Float[Array, " m"], Float[Array, "m n"]]]
                  | None = None,
                  normal_equations: Callable[[Float[Array, " n"], PyTree],
                                             tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]]
                  | None = None) -> Solution:
    r"""Minimise ``1/2 ||fn(w, args)||^2`` over ``w``, differentiably.

    Args:
        fn: residual function ``(w, args) -> r`` with ``r`` of shape ``(m,)``.
            It may close over arrays, traced ones included: they are
            differentiated like ``args``.
        w0: initial guess, shape ``(n,)``, float64.  Not differentiated.
        args: pytree; the solution is differentiable with respect to every
            floating array in it.
        solver: a :class:`LevenbergMarquardt` (its tolerances and damping).
        adjoint: how the solution is differentiated; default
            :class:`~pihc.adjoint.ImplicitAdjoint` (the implicit function
            theorem on ``grad_w 1/2 ||fn||^2 = 0``).
        jac: optional ``(w, args) -> (r, J)`` exploiting structure, for the
            iterations; by default forward-mode autodiff of ``fn``.
        normal_equations: optional ``(w, args) -> (1/2 ||r||^2, J^T r, J^T J)``
            for problems whose normal equations are cheaper to form directly;
            it takes precedence over ``jac``.  It must agree with ``fn``: the
            gradients always come from ``fn`` itself.

    Returns:
        A :class:`Solution`.  jit- and vmap-compatible.

    Example:
        >>> sol = least_squares(lambda w, a: a["A"] @ w - a["b"], jnp.zeros(3), {"A": A, "b": b},
        ...                     solver=LevenbergMarquardt(rtol=1e-10))
    """
    from .adjoint import ImplicitAdjoint

    require_x64()
    w0 = jnp.asarray(w0)
    if w0.ndim != 1:
        raise ValueError(f"w0 must be a vector, got shape {w0.shape}")
    if w0.dtype != jnp.float64:
        raise PrecisionError(f"w0 must be float64, got {w0.dtype}")
    adjoint = ImplicitAdjoint() if adjoint is None else adjoint
    if normal_equations is None:
        normal_equations = _normal_from_jac(jac if jac is not None else _jacfwd(fn))
    # The functions may close over traced values; hoisting them into explicit
    # inputs lets the adjoint differentiate them (a custom VJP cannot see
    # closed-over values).
    fn_closed, fn_consts = jax.closure_convert(fn, w0, args)
    normal_closed, normal_consts = jax.closure_convert(normal_equations, w0, args)
    # As arrays: a weak-typed scalar constant would otherwise not count as a
    # differentiable input.
    consts = tuple([jnp.asarray(c) for c in cs] for cs in (fn_consts, normal_consts))
    problem = _Problem(fn_closed, normal_closed)
    return adjoint.apply(problem.solve, problem.optimality, (args, *consts), w0, solver)


class _Problem(eqx.Module):
    """``least_squares``' functions of ``(args, fn constants, normal-equation constants)``."""

    fn: Callable = eqx.field(static=True)
    normal: Callable = eqx.field(static=True)

    def solve(self, inputs, w0, solver: LevenbergMarquardt) -> tuple[Solution, None]:
        args, _, nconsts = inputs
        return solver.solve(lambda w: self.normal(w, args, *nconsts), w0), None

    def optimality(self, inputs, w):
        """``G(w, theta) = grad_w 1/2 ||fn(w, theta)||^2``, zero at the solution."""
        args, consts, _ = inputs
        return jax.grad(lambda v: 0.5 * jnp.sum(self.fn(v, args, *consts) ** 2))(w)


def _jacfwd(fn):
    """``(w, args) -> (r, J)`` by forward-mode autodiff (n tangents)."""

    def jac(w, args):
        r, lin = jax.linearize(lambda v: fn(v, args), w)
        return r, jax.vmap(lin, out_axes=1)(jnp.eye(w.shape[0], dtype=w.dtype))

    return jac


def _normal_from_jac(jac):
    def normal(w, args):
        r, J = jac(w, args)
        return 0.5 * (r @ r), J.T @ r, J.T @ J

    return normal
