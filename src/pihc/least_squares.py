r"""Differentiable nonlinear least squares: Levenberg-Marquardt + implicit adjoint.

Solves

.. math::  w^* = \arg\min_w \tfrac12 \lVert r(w, \theta) \rVert_2^2

for a residual ``r = fn(w, args)`` with a few to a few hundred unknowns and up
to millions of rows.  Each iteration forms the Gauss-Newton matrix
``A = J^T J`` (n x n) and gradient ``g = J^T r`` and solves the damped system
``(A + mu diag(A)) delta = -g`` by Cholesky; with n << m this costs
O(m n^2), dominated by forming ``A``.

Gradients come from the implicit function theorem at ``w*``: the optimality
condition ``G(w, theta) = grad_w L = J^T r = 0`` (L = 1/2 ||r||^2) gives

.. math::  \frac{dw^*}{d\theta} = -H^{-1} \partial_\theta G, \qquad
           H = \partial_w G = J^T J + \sum_i r_i \nabla^2_w r_i,

with the exact Hessian ``H`` of L (not its Gauss-Newton part, which is exact
only for zero-residual problems).  The backward pass solves one n x n system
and takes one vector-Jacobian product of ``G``; the solver's iterations are
never unrolled or stored.

A solve that does not converge is reported by ``Solution.status``; its
gradient is *zero* (the implicit function theorem does not hold away from a
stationary point), so callers must look at ``status`` -- the trainer counts
and excludes such solves.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

__all__ = ["least_squares", "Solution", "RESULTS", "PrecisionError", "require_x64"]


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
    RESULTS.nonfinite: "the residual or its Jacobian is NaN or infinite at the initial point;"
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
    """Result of :func:`least_squares`.

    Attributes:
        value: the minimiser ``w*``, shape ``(n,)``.
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


JacFn = Callable[[Float[Array, " n"], Any], tuple[Float[Array, " m"], Float[Array, "m n"]]]


def jacfwd_residual(fn: Callable) -> JacFn:
    """``(w, args) -> (r, J)`` by forward-mode autodiff (n tangents)."""

    def jac(w, args):
        r, lin = jax.linearize(lambda v: fn(v, args), w)
        J = jax.vmap(lin, out_axes=1)(jnp.eye(w.shape[0], dtype=w.dtype))
        return r, J

    return jac


NormalFn = Callable[[Float[Array, " n"], Any],
                    tuple[Float[Array, ""], Float[Array, " n"], Float[Array, "n n"]]]
HessianFn = Callable[[Float[Array, " n"], Any], Float[Array, "n n"]]


def least_squares(fn: Callable[[Float[Array, " n"], PyTree], Float[Array, " m"]],
                  w0: Float[Array, " n"], args: PyTree = None, *, max_steps: int = 100,
                  rtol: float = 1e-8, atol: float = 1e-12, jac: JacFn | None = None,
                  normal_equations: NormalFn | None = None, hessian: HessianFn | None = None,
                  damping: float = 1e-3) -> Solution:
    r"""Minimise ``1/2 ||fn(w, args)||^2`` over ``w`` by Levenberg-Marquardt.

    Args:
        fn: residual function ``(w, args) -> r`` with ``r`` of shape ``(m,)``.
            It may close over constants; anything to differentiate through
            must come in ``args``.
        w0: initial guess, shape ``(n,)``, float64.
        args: pytree of arrays; the solution is differentiable with respect to
            every floating array in it (implicit function theorem).
        max_steps: iteration cap; hitting it gives status ``max_steps_reached``.
        rtol, atol: converged when the Gauss-Newton step at the current point
            is small: ``||A^{-1} g||_inf <= atol + rtol ||w||_inf``.
        jac: optional ``(w, args) -> (r, J)`` exploiting structure; by default
            forward-mode autodiff of ``fn``.
        normal_equations: optional ``(w, args) -> (1/2 ||r||^2, J^T r, J^T J)``
            for problems whose normal equations are cheaper to form directly
            (e.g. constant rows whose Gram matrix is precomputed).  It must
            agree with ``fn``; it takes precedence over ``jac``.  The
            iterations only ever need these three quantities.
        hessian: optional ``(w, args) -> H``, the exact Hessian of
            ``1/2 ||fn(w, args)||^2`` in ``w`` (n x n), for the implicit
            backward pass; by default forward-mode autodiff of its gradient
            (n tangents through ``fn``).  Only its value is used (it is not
            differentiated).
        damping: initial Marquardt parameter mu (relative to diag(A)).

    Returns:
        A :class:`Solution`.  jit- and vmap-compatible (under vmap each
        problem stops updating once it has converged).

    Example:
        >>> sol = least_squares(lambda w, a: a["A"] @ w - a["b"], jnp.zeros(3), {"A": A, "b": b})
    """
    require_x64()
    w0 = jnp.asarray(w0)
    if w0.ndim != 1:
        raise ValueError(f"w0 must be a vector, got shape {w0.shape}")
    if w0.dtype != jnp.float64:
        raise PrecisionError(f"w0 must be float64, got {w0.dtype}")
    # Hoist any traced values the function closes over into explicit,
    # differentiable arguments (custom_vjp needs them explicit).
    closed, consts = jax.closure_convert(fn, w0, args)
    opts = _Options(int(max_steps), float(rtol), float(atol), float(damping))
    if normal_equations is not None:
        normal_closed, normal_consts = jax.closure_convert(normal_equations, w0, args)
    else:
        if jac is None:
            jac = jacfwd_residual(fn)
        normal_closed, normal_consts = jax.closure_convert(_normal_from_jac(jac), w0, args)
    if hessian is not None:
        hessian_closed, hessian_consts = jax.closure_convert(hessian, w0, args)
    else:
        hessian_closed, hessian_consts = None, ()
    w, steps, rnorm, gnorm, status = _solve(
        _Problem(closed, normal_closed, hessian_closed), opts, jax.lax.stop_gradient(w0),
        (tuple(consts), tuple(normal_consts), tuple(hessian_consts), args))
    return Solution(w, steps, rnorm, gnorm, status)


def _normal_from_jac(jac: JacFn) -> NormalFn:
    def normal(w, args):
        r, J = jac(w, args)
        return 0.5 * (r @ r), J.T @ r, J.T @ J

    return normal


class _Options(eqx.Module):
    max_steps: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    damping: float = eqx.field(static=True)


class _Problem(eqx.Module):
    """Residual and normal equations of the closure-converted functions."""

    fn: Callable = eqx.field(static=True)
    normal: Callable = eqx.field(static=True)
    hess: Callable | None = eqx.field(static=True, default=None)

    def residual(self, w, packed):
        consts, _, _, args = packed
        return self.fn(w, args, *consts)

    def normal_equations(self, w, packed):
        _, nconsts, _, args = packed
        return self.normal(w, args, *nconsts)

    def hessian(self, w, packed):
        _, _, hconsts, args = packed
        return self.hess(w, args, *hconsts)


def _damped_step(A, g, mu):
    # Marquardt's scaling (mu * diag(A)) makes the step invariant to the
    # scale of each unknown; clip the diagonal so a zero column still damps.
    d = jnp.diag(A)
    d = jnp.maximum(d, 1e-12 * jnp.max(d) + jnp.finfo(A.dtype).tiny)
    L, lower = jax.scipy.linalg.cho_factor(A + mu * jnp.diag(d), lower=True)
    return -jax.scipy.linalg.cho_solve((L, lower), g)


def _gauss_newton_step(A, g):
    # Smallest damping that keeps the Cholesky factorisation of a
    # (numerically) singular A defined; negligible for well-posed problems.
    eps = jnp.finfo(A.dtype).eps * jnp.max(jnp.diag(A)) + jnp.finfo(A.dtype).tiny
    L, lower = jax.scipy.linalg.cho_factor(A + eps * jnp.eye(A.shape[0], dtype=A.dtype), lower=True)
    return -jax.scipy.linalg.cho_solve((L, lower), g)


def _lm(problem: _Problem, opts: _Options, w0, packed):
    # The loop carries only the normal equations (A = J^T J, g = J^T r and
    # the cost), never r or J: with m >> n rows, carrying and selecting the
    # m x n Jacobian every iteration costs more memory traffic than forming A.
    cost0, g0, A0 = problem.normal_equations(w0, packed)
    finite0 = jnp.isfinite(cost0) & jnp.all(jnp.isfinite(g0)) & jnp.all(jnp.isfinite(A0))

    def converged(w, A, g):
        gn = _gauss_newton_step(A, g)
        return jnp.max(jnp.abs(gn)) <= opts.atol + opts.rtol * jnp.max(jnp.abs(w))

    init = dict(w=w0, g=g0, A=A0, cost=cost0,
                mu=jnp.asarray(opts.damping, w0.dtype), nu=jnp.asarray(2.0, w0.dtype),
                step=jnp.asarray(0), done=converged(w0, A0, g0) | ~finite0)

    def cond(s):
        return ~s["done"] & (s["step"] < opts.max_steps)

    def body(s):
        delta = _damped_step(s["A"], s["g"], s["mu"])
        w_new = s["w"] + delta
        cost_new, g_new, A_new = problem.normal_equations(w_new, packed)
        # Predicted reduction of the quadratic model: -(g.d + d.A.d / 2) > 0.
        pred = -(s["g"] @ delta + 0.5 * delta @ (s["A"] @ delta))
        rho = (s["cost"] - cost_new) / jnp.where(pred > 0, pred, 1.0)
        # Below ~eps * cost the change in cost is rounding noise and rho
        # is meaningless (cost comparisons only resolve w to ~sqrt(eps));
        # there the quadratic model is trusted and the step is taken.
        tiny = pred <= 16.0 * jnp.finfo(w0.dtype).eps * s["cost"]
        ok = (jnp.isfinite(cost_new) & jnp.all(jnp.isfinite(A_new)) & jnp.all(jnp.isfinite(g_new))
              & (pred > 0) & ((rho > 0) | tiny))
        # Nielsen's damping update (smooth decrease on success, doubling on failure).
        mu_ok = s["mu"] * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * jnp.clip(rho, 0.0, 1.0) - 1.0) ** 3)
        pick = lambda a, b: jnp.where(ok, a, b)  # noqa: E731
        w = pick(w_new, s["w"])
        A, g = pick(A_new, s["A"]), pick(g_new, s["g"])
        return dict(
            w=w, g=g, A=A, cost=pick(cost_new, s["cost"]),
            mu=pick(mu_ok, s["mu"] * s["nu"]), nu=pick(jnp.asarray(2.0, w0.dtype), 2.0 * s["nu"]),
            step=s["step"] + 1, done=ok & converged(w_new, A_new, g_new))

    s = jax.lax.while_loop(cond, body, init)
    status = jnp.where(~finite0, RESULTS.nonfinite,
                       jnp.where(s["done"], RESULTS.successful, RESULTS.max_steps_reached))
    return (s["w"], s["step"], jnp.sqrt(2.0 * s["cost"]), jnp.max(jnp.abs(s["g"])),
            status.astype(jnp.int32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _solve(problem, opts, w0, packed):
    return _lm(problem, opts, w0, packed)


def _solve_fwd(problem, opts, w0, packed):
    out = _lm(problem, opts, w0, packed)
    return out, (out[0], out[4], packed)


def _solve_bwd(problem, opts, res, cts):
    w, status, packed = res
    ct_w = cts[0]

    def optimality(v, p):  # G(w, theta) = grad_w 1/2 ||r||^2
        return jax.grad(lambda u: 0.5 * jnp.sum(problem.residual(u, p) ** 2))(v)

    if problem.hess is None:
        H = jax.jacfwd(optimality, argnums=0)(w, packed)
    else:
        H = problem.hessian(w, packed)
    lam = jnp.linalg.solve(H, ct_w)
    _, vjp = jax.vjp(lambda p: optimality(w, p), packed)
    (ct_packed,) = vjp(-lam)
    # No gradient through a failed solve (see module docstring): the
    # implicit function theorem needs a stationary point.
    ok = status == RESULTS.successful
    ct_packed = jax.tree.map(lambda c: jnp.where(ok, c, jnp.zeros_like(c)), ct_packed)
    return jnp.zeros_like(w), ct_packed


_solve.defvjp(_solve_fwd, _solve_bwd)
