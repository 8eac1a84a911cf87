"""The CPU schedule flag pihc sets at import (``pihc.xla_flags``) and the deadlock behind it.

A Navier-Stokes MoE step whose experts' Levenberg-Marquardt solves run
batched (``expert_loop: vmap``) with 64 basis functions used to hang: jaxlib's
batched LAPACK kernels wait for tasks on XLA's intra-op thread pool, and once
every pool thread ran such a kernel (XLA's concurrency-optimised CPU schedule,
or two CPU devices of one process) none was left to run them.  The solves now
loop over the batch (:mod:`pihc.dense`).  The runs below are those cases at a
tiny size: ``pihc train`` in a fresh process, as a user starts it, must
finish its two steps, with the loss of the experts solved one after the other.
"""

import json
import os
import subprocess
import sys

import pytest

from pihc.xla_flags import SCHEDULER_FLAG, apply_cpu_schedule_flag

# An often-quoted single-thread setting; its second word is not an XLA flag.
USER_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


@pytest.mark.parametrize("before,after,added", [
    (None, f"{SCHEDULER_FLAG}=false", True),
    ("--xla_force_host_platform_device_count=2", f"{SCHEDULER_FLAG}=false --xla_force_host_platform_device_count=2",
     True),
    # First, before a word XLA stops at (it ignored the flag appended after this one).
    (USER_FLAGS, f"{SCHEDULER_FLAG}=false {USER_FLAGS}", True),
    (f"{SCHEDULER_FLAG}=true", f"{SCHEDULER_FLAG}=true", False),  # the user's choice stands
])
def test_the_flag_is_put_first_once_and_a_users_choice_kept(before, after, added):
    env = {} if before is None else {"XLA_FLAGS": before}
    assert apply_cpu_schedule_flag(env) is added
    assert env["XLA_FLAGS"] == after
    assert apply_cpu_schedule_flag(env) is False and env["XLA_FLAGS"] == after


def test_importing_pihc_sets_it_before_any_backend_starts():
    code = "import os, pihc, jax; jax.numpy.zeros(1).block_until_ready(); print(os.environ['XLA_FLAGS'])"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [f"{SCHEDULER_FLAG}=false"]


TINY_N64 = [
    "data.generate.samples=6", "data.generate.nx=16", "data.generate.nt=9", "data.generate.solve_nx=32",
    "data.nt=9", "data.nx=8", "data.ny=8", "data.train_samples=2", "data.test_samples=2", "model.width=8",
    "model.layers=2", "model.modes=[3, 3, 3]", "model.n_basis=64", "model.padding=[2, 0, 0]",
    "constraint.splits=[1, 2, 2]", "constraint.overlap=[0, 1, 1]", "constraint.n_points=100",
    "constraint.time_slabs=1",
    "optim.batch=2", "optim.steps=2", "run.checkpoint_every=2"]


def _solver_rtol() -> float:
    """The config's LM tolerance: two runs whose solves stop at different iterations (experts one after
    the other against batched until the slowest converges; a batch split over devices, each device's
    loop stopping with its own samples) give weights, and so losses, that agree to it, not bit for bit."""
    from pihc.training.config import load_config

    return load_config("navier-stokes/moe-small").constraint.solver.rtol


def _train_tiny(directory, name, expert_loop, xla_flags=None, extra=()):
    sets = [f"data.path={directory / 'ns.h5'}", *TINY_N64, f"constraint.expert_loop={expert_loop}", *extra]
    cmd = [sys.executable, "-m", "pihc.cli", "train", "--config", "navier-stokes/moe-small", "--out",
           str(directory / name), "--quiet", *[a for s in sets for a in ("--set", s)]]
    # pihc's own default flags and no compilation cache, as a user gets them
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    try:  # about 10 s; without the flag it waits forever, so the limit is generous but finite
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pihc train ({expert_loop} experts, XLA_FLAGS={xla_flags!r}) did not finish two tiny"
                    " steps in 240 s (the thread-pool deadlock)")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """One directory for this module's runs: the tiny dataset is generated once and shared."""
    return tmp_path_factory.mktemp("xla_flags")


@pytest.fixture(scope="module")
def one_by_one(tiny_dir):
    # The reference: the same two steps with the experts solved one after the other (lax.map, no batched
    # while_loop), which never hung; each expert stops at its own convergence, so the losses agree to
    # the solver's tolerance (_solver_rtol), not bit for bit.
    run = _train_tiny(tiny_dir, "sequential", "sequential")
    assert run["steps"] == 2
    return run


def test_batched_expert_solves_with_64_basis_functions_finish_on_every_core(tiny_dir, one_by_one):
    batched = _train_tiny(tiny_dir, "vmap", "vmap")
    assert batched["steps"] == 2
    assert batched["final_loss"] == pytest.approx(one_by_one["final_loss"], rel=_solver_rtol())
    # With the user's single-thread flags, whose bare word made XLA ignore the flag appended after it.
    single = _train_tiny(tiny_dir, "vmap-single-thread", "vmap", USER_FLAGS)
    assert single["steps"] == 2 and single["final_loss"] == pytest.approx(one_by_one["final_loss"], rel=_solver_rtol())


def test_the_concurrent_schedule_and_two_cpu_devices_finish_too(tiny_dir, one_by_one):
    """The deadlock's two triggers, with the schedule flag out of the way: XLA's concurrent schedule
    (the user's explicit choice, which pihc keeps), and a batch split over two CPU devices."""
    concurrent = _train_tiny(tiny_dir, "concurrent", "vmap", f"{SCHEDULER_FLAG}=true {USER_FLAGS}")
    two = _train_tiny(tiny_dir, "two-devices", "vmap", f"{SCHEDULER_FLAG}=true"
                      " --xla_force_host_platform_device_count=2", extra=["mesh.batch=2"])
    for run in (concurrent, two):
        assert run["steps"] == 2 and run["final_loss"] == pytest.approx(one_by_one["final_loss"], rel=_solver_rtol())
