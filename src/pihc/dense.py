r"""Small dense linear solves whose LAPACK calls are never batched.

The solver layer solves many small systems (``N x N``, one per expert,
sample and iteration).  Under ``vmap`` JAX hands such a batch to one LAPACK
call, and jaxlib's CPU kernels (0.10) split a batched call into tasks on
XLA's intra-op thread pool and block until those finish.  When the pool's
threads are all running such calls at once (two CPU devices of one process,
each solving on a pool thread; or XLA's concurrent schedule of independent
operations) no thread is left for the tasks they wait for, and the process
hangs without a message.

Here a batch runs as a loop of single solves (``lax.map``): each LAPACK call
holds one matrix and computes it on the calling thread.  For the sizes of
this layer (``N <= 64``) a factorisation takes microseconds, so the loop
costs little against the passes over the basis around it.

    solve(A, b)       A x = b, A square (LU with partial pivoting)
    solve_spd(A, b)   A x = b, A symmetric positive definite (Cholesky; lower triangle read)
    solve_sym(A, b)   A x = b, A symmetric: Cholesky, and LU where Cholesky fails (A not
                      positive definite)

Cholesky where it applies: besides half the arithmetic, XLA's CPU LU turns
its pivots into a permutation with a loop of ``n`` small operations, which
costs more than the factorisation at these sizes.

Both accept and return ``b`` of shape ``(n,)``.  Neither is differentiable
(no caller needs it: the layer differentiates its solves implicitly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["solve", "solve_spd", "solve_sym"]


def _looped(fn):
    """``fn`` whose batching rule maps the unbatched ``fn`` over the batch, one call at a time."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        args = [a if batched else jnp.broadcast_to(a, (axis_size,) + a.shape)
                for a, batched in zip(args, in_batched)]
        # The body calls `wrapped` again: under nested vmaps each level becomes a loop.
        return jax.lax.map(lambda xs: wrapped(*xs), tuple(args)), True

    return wrapped


@_looped
def solve(A: Float[Array, "n n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    return jnp.linalg.solve(A, b)


@_looped
def solve_spd(A: Float[Array, "n n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    L, lower = jax.scipy.linalg.cho_factor(A, lower=True)
    return jax.scipy.linalg.cho_solve((L, lower), b)


@_looped
def solve_sym(A: Float[Array, "n n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    L, lower = jax.scipy.linalg.cho_factor(A, lower=True)
    x = jax.scipy.linalg.cho_solve((L, lower), b)
    # One matrix at a time (the loop above), so this is a branch, not both computed under vmap.
    return jax.lax.cond(jnp.all(jnp.isfinite(x)), lambda: x, lambda: jnp.linalg.solve(A, b))
