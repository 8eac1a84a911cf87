"""The XLA compiler flag pihc sets for the CPU before the backend starts.

XLA's CPU compiler orders each computation's instructions with one of two
schedulers: a breadth-first one that exposes concurrency (the default) or a
depth-first, memory-frugal one. With jaxlib 0.10 on a machine with more than
one core, programs of this package whose Levenberg-Marquardt solves run as one
batched ``while_loop`` over experts (``HardConstraint.expert_loop="vmap"``)
with 64 basis functions never finish under the breadth-first schedule: every
worker thread waits, idle, and the caller waits on the result forever (a tiny
case is ``tests/test_xla_flags.py``; ``--xla_cpu_multi_thread_eigen=false``
does not help, the depth-first schedule does). pihc therefore asks for the
depth-first schedule, unless ``XLA_FLAGS`` already says which to use.

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
    XLA did not apply the appended flag, and such a run hung.  Returns
    whether it was added: not when ``XLA_FLAGS`` already names the flag (the
    user's choice, either way, stands).
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if SCHEDULER_FLAG in flags:
        return False
    env["XLA_FLAGS"] = f"{SCHEDULER_FLAG}=false {flags}".strip()
    return True
