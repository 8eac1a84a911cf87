"""The XLA compiler flag pihc sets for the CPU before the backend starts.

XLA's CPU compiler orders each computation's instructions with one of two
schedulers: a breadth-first one that exposes concurrency (the default) or a
depth-first, memory-frugal one. pihc asks for the depth-first schedule,
unless ``XLA_FLAGS`` already says which to use: the documented CPU runs used
it, and it keeps fewer independent operations in flight on the intra-op
thread pool.

It was first set against a hang: with jaxlib 0.10 on a machine with more than
one core, a step whose experts' Levenberg-Marquardt solves run batched
(``HardConstraint.expert_loop="vmap"``) with 64 basis functions never
finished under the breadth-first schedule. The cause is jaxlib's batched
LAPACK kernels, which split a batch into tasks on the intra-op pool and block
until they finish: with every pool thread inside such a kernel, none is left
to run the tasks. The layer's solves now never hand LAPACK a batch
(:mod:`pihc.dense`), so neither this schedule nor two CPU devices of one
process hang them (``tests/test_xla_flags.py``); a user's code that calls a
batched ``jnp.linalg`` routine inside a step still can.

XLA reads ``XLA_FLAGS`` once, when its first backend starts, so this runs when
``pihc`` is imported (editing an environment variable; no JAX call). A
program that has already run JAX computations before importing pihc keeps the
flags it started with: set ``XLA_FLAGS`` yourself then (the line above). The
flag is a CPU compiler option; GPU and TPU compilations ignore it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def apply_cpu_schedule_flag(environ: MutableMapping[str, str] | None = None) -> bool:
    """Put ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` first in ``XLA_FLAGS``.

    First, not last: after a word that is not a ``--`` flag, such as the
    often-quoted ``intra_op_parallelism_threads=1`` in
    ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``,
    XLA did not apply the appended flag.  Returns
    whether it was added: not when ``XLA_FLAGS`` already names the flag (the
    user's choice, either way, stands).
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return False
    env["XLA_FLAGS"] = f"{SCHEDULER_FLAG}=false {flags}".strip()
    return True
