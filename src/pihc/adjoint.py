r"""How a least-squares solve is differentiated: adjoint objects.

A solve maps inputs ``theta`` to the minimiser ``w*(theta)`` of
``L(w, theta) = 1/2 ||r(w, theta)||^2``.  Its iterations are never
differentiated.  At ``w*`` the optimality condition

.. math::  G(w^*, \theta) = \nabla_w L(w^*, \theta) = J^T r = 0

holds, and the implicit function theorem gives

.. math::  \frac{dw^*}{d\theta} = -H^{-1} \partial_\theta G, \qquad
           H = \partial_w G = J^T J + \sum_i r_i \nabla^2_w r_i,

with the exact Hessian ``H`` of ``L`` (its Gauss-Newton part alone is exact
only for zero-residual problems).  For a cotangent ``ct_w`` of the solution,
the cotangent of the inputs is therefore that of ``v . G(w*, theta)`` with
``v = -H^{-1} ct_w``: one ``n x n`` solve and one vector-Jacobian product.

An adjoint object says how that product is formed:

* :class:`ImplicitAdjoint`: by autodiff of any optimality function (the
  Hessian by forward mode, ``n`` tangents; the product by reverse mode).
  It needs nothing but ``G``, and is the reference for the others.
* :class:`StructuredAdjoint`: by the problem itself
  (``inputs.implicit_cotangent``), for problems whose structure gives the
  Hessian and the product more cheaply (the constraint layer's experts,
  :class:`~pihc.constraint.ExpertsProblem`).

A solve that did not converge gets a zero cotangent: the implicit function
theorem needs a stationary point.  The solvers report such solves in
``Solution.status``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from .dense import solve
from .least_squares import RESULTS, Solution

__all__ = ["AbstractAdjoint", "ImplicitAdjoint", "StructuredAdjoint"]

SolveFn = Callable[..., tuple[Solution, PyTree]]  # (inputs, w0, solver) -> (Solution, arrays kept for the adjoint)
OptimalityFn = Callable[[PyTree, Array], Array]  # (inputs, w) -> G, the shape of w


class AbstractAdjoint(eqx.Module):
    """How :meth:`apply` differentiates a solve (subclass only)."""

    def apply(self, solve: SolveFn, optimality: OptimalityFn, inputs: PyTree, w0: Array | None, solver: Any
              ) -> Solution:
        """The solution of ``solve(inputs, w0, solver)``, differentiable in ``inputs`` by :meth:`cotangent`.

        ``solve`` returns the :class:`~pihc.least_squares.Solution` and a pytree
        of arrays that the adjoint may reuse (e.g. the problem's linearisation;
        None if nothing).  ``optimality(inputs, w)`` is ``G``, zero at the
        solution.  ``w0`` (None: ``solve``'s own start) and ``solver`` are not differentiated.
        """
        return _differentiable_solve(inputs, self, solve, optimality, w0, solver)

    @abc.abstractmethod
    def cotangent(self, optimality: OptimalityFn, w: Array, status: Int[Array, "*batch"], ct_w: Array,
                  inputs: PyTree, kept: PyTree) -> PyTree:
        """The cotangent of ``inputs`` given that of the solution ``w`` (``None`` leaves: zero).

        ``kept`` is what ``solve`` returned beside the solution.
        """


class ImplicitAdjoint(AbstractAdjoint):
    r"""The implicit function theorem by autodiff of the optimality condition.

    ``H`` is ``jacfwd`` of ``G`` in ``w`` (all of ``w`` flattened: for a batch
    of independent problems it is block diagonal), ``v = -H^{-1} ct_w``, and
    the cotangent of the inputs is the VJP of ``theta -> G(w*, theta)`` at ``v``.
    Every cotangent is zero unless every solve in the batch converged: a
    failed solve's arrays may hold NaN, which the shared inputs' products
    would carry (``0 * NaN = NaN``).
    """

    def cotangent(self, optimality, w, status, ct_w, inputs, kept):
        del kept
        ok = jnp.all(status == RESULTS.successful)
        n = w.size
        H = jax.jacfwd(optimality, argnums=1)(inputs, w).reshape(n, n)
        # A failed solve's H may be singular or NaN: solve with the identity
        # instead, and zero the result below.
        H = jnp.where(ok, H, jnp.eye(n, dtype=H.dtype))
        v = -solve(H, ct_w.reshape(n)).reshape(w.shape)
        _, vjp = eqx.filter_vjp(lambda p: optimality(p, w), inputs)
        (ct,) = vjp(jnp.where(ok, v, 0.0))
        return jax.tree.map(lambda c: jnp.where(ok, c, 0.0), ct)


class StructuredAdjoint(AbstractAdjoint):
    """The implicit function theorem as the problem itself forms it.

    ``inputs`` must have a method ``implicit_cotangent(w, status, ct_w, kept)``
    returning the cotangent of ``inputs`` (the same values as
    :class:`ImplicitAdjoint` up to round-off, where every solve converged).
    The constraint layer's :class:`~pihc.constraint.ExpertsProblem` forms
    ``H`` from its structure and maps the cotangent back to the grid
    through a handful of transposed stencils; see its docstring.
    """

    def cotangent(self, optimality, w, status, ct_w, inputs, kept):
        return inputs.implicit_cotangent(w, status, ct_w, kept)


# The custom VJP, at module level.  Forward: the solver's loop, not
# differentiated.  Backward: the adjoint's cotangent at the solution.  Only
# `inputs` (the first argument) is differentiated; the adjoint, the functions,
# the starting point and the solver are not.
@eqx.filter_custom_vjp
def _differentiable_solve(inputs, adjoint, solve, optimality, w0, solver):
    return solve(inputs, w0, solver)[0]


@_differentiable_solve.def_fwd
def _differentiable_solve_fwd(perturbed, inputs, adjoint, solve, optimality, w0, solver):
    del perturbed
    sol, kept = solve(inputs, w0, solver)
    return sol, (sol.value, sol.status, kept)


@_differentiable_solve.def_bwd
def _differentiable_solve_bwd(residuals, ct_sol, perturbed, inputs, adjoint, solve, optimality, w0, solver):
    del perturbed, solve, w0, solver
    w, status, kept = residuals
    ct_w: Float[Array, "..."] | None = ct_sol.value
    if ct_w is None:  # only the iteration counts or norms were used: no gradient
        return jax.tree.map(lambda _: None, inputs)
    return adjoint.cotangent(optimality, w, status, ct_w, inputs, kept)
