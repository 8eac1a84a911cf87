"""Scale-out (pihc.sharding): training on meshes of forced CPU devices, and on two processes.

Meshes of several devices need JAX started with more than one CPU device,
so each test runs its training in subprocesses (``tests/_scale_out.py``,
with ``--xla_force_host_platform_device_count``) and compares, here, their
run directories: the metrics of every step and the checkpointed parameters
and optimiser state.  The backbone runs in float64 (``model.dtype``), so the
only differences left are the order of floating-point sums (the gradient's
reduction across devices, the experts' vmap on fewer lanes).
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _tiny import TinyData, metrics, tiny_config

from pihc.pdes import diffusion_sorption_grid
from pihc.training.model import read_model

WORKER = Path(__file__).with_name("_scale_out.py")
SRC = Path(__file__).resolve().parents[1] / "src"
# Four experts (1 x 4 blocks), a batch of 4, float64 throughout; PDE rows weighted so that every
# solve converges in a few iterations from the untrained basis (a solve that stops at max_steps
# depends on every rounding of its path, so it would not compare to 1e-10).
CONFIG = {"constraint__splits": [1, 4], "model__dtype": "float64", "optim__batch": 4, "optim__steps": 10,
          "optim__decay_every": 4, "run__checkpoint_every": 100,
          "constraint__row_weights": {"pde": 1.0, "initial": 32.0, "boundary": 16.0}}
RTOL = 1e-10


def _env(devices: int) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env = dict(os.environ, XLA_FLAGS=flags,
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("JAX_PLATFORMS", None)
    return env


def _jobs(tmp_path, jobs, devices=8):
    """Run ``jobs`` (see tests/_scale_out.py) in one subprocess with ``devices`` CPU devices."""
    spec = tmp_path / "jobs.json"
    cache = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tmp_path / "xla")  # the suite's, if it has one
    spec.write_text(json.dumps({"config": CONFIG, "data_dir": str(tmp_path), "cache": cache,
                                "jobs": jobs}))
    proc = subprocess.run([sys.executable, str(WORKER), str(spec)], env=_env(devices), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _close(a: float, b: float, rtol=RTOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-300)


def _same_metrics(ref: list[dict], other: list[dict], rtol=RTOL) -> None:
    assert [r["step"] for r in ref] == [r["step"] for r in other]
    for a, b in zip(ref, other):
        assert set(a) == set(b)
        for k in a:
            if k == "step_time_s":
                continue
            if isinstance(a[k], float):
                assert _close(a[k], b[k], rtol), (a["step"], k, a[k], b[k])
            else:  # counts: failed solves, iterations (the max over experts and samples)
                assert a[k] == b[k], (a["step"], k, a[k], b[k])


def _state(tmp_path, run) -> list[np.ndarray]:
    """The parameters of ``run``'s checkpoint, read on this process's one device."""
    cfg = tiny_config(tmp_path, **CONFIG)
    model, meta = read_model(cfg, TinyData().pde, diffusion_sorption_grid(9, 32, t_max=40.0), run)
    import equinox as eqx

    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))], meta["step"]


def _same_state(tmp_path, ref, other, rtol=RTOL) -> None:
    (a, step_a), (b, step_b) = _state(tmp_path, ref), _state(tmp_path, other)
    assert step_a == step_b and len(a) == len(b)
    scale = max(float(np.max(np.abs(x))) for x in a)
    assert scale > 0
    for x, y in zip(a, b):
        assert x.dtype == np.float64
        np.testing.assert_allclose(y, x, rtol=0, atol=rtol * scale)


def test_meshes_of_4_and_8_devices_train_as_one_device_and_resume_on_another_number(tmp_path):
    """A step on a 1 x 4 and a 2 x 4 mesh equals the one-device step (loss, parameters); ten steps give
    the same metrics; a run checkpointed on 4 devices (after step 3) resumes on 1 and on 8 and ends
    where the one-device run does.  One subprocess: the three meshes' programs compile once."""
    jobs = []
    for name, mesh in (("one", [1, 1]), ("m1x4", [1, 4]), ("m2x4", [2, 4])):
        run = str(tmp_path / name)
        jobs += [{"out": run, "mesh": mesh, "max_steps": 1, "copy_to": [run + "-step1"]},
                 {"out": run, "mesh": mesh, "max_steps": 9, "resume": True}]
    four = str(tmp_path / "on4")
    jobs += [{"out": four, "mesh": [1, 4], "max_steps": 3, "copy_to": [four + "-to1", four + "-to8"]},
             {"out": four + "-to1", "mesh": [1, 1], "max_steps": 7, "resume": True},
             {"out": four + "-to8", "mesh": [2, 4], "max_steps": 7, "resume": True}]
    _jobs(tmp_path, jobs)
    ref = metrics(tmp_path / "one")
    assert len(ref) == 10 and ref[0]["failed_solves"] == 0 and ref[0]["solver_steps_max"] > 1
    assert ref[-1]["loss"] < 0.5 * ref[0]["loss"]  # it trains: the comparison is not of a frozen state
    for name in ("m1x4", "m2x4"):  # one step: loss (its metrics) and parameters; then ten steps
        _same_metrics(ref[:1], metrics(tmp_path / f"{name}-step1"))
        _same_state(tmp_path, tmp_path / "one-step1", tmp_path / f"{name}-step1")
        _same_metrics(ref, metrics(tmp_path / name))
        _same_state(tmp_path, tmp_path / "one", tmp_path / name)
    for name in ("on4-to1", "on4-to8"):  # checkpointed on 4 devices, resumed on 1 and on 8
        assert _state(tmp_path, tmp_path / name)[1] == 10
        _same_metrics(ref, metrics(tmp_path / name))
        _same_state(tmp_path, tmp_path / "one", tmp_path / name)


_SLABS_ON_A_MESH = """
import json, sys
sys.path.insert(0, sys.argv[1])
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from _heat2d import Heat2D, initial_field, smooth_field, torus_grid
from pihc.constraint import HardConstraint
from pihc.experts import RowWeights
from pihc.least_squares import LevenbergMarquardt
from pihc.sharding import device_mesh

grid = torus_grid(9, 8, 8)
rng = np.random.default_rng(6)
basis = jnp.asarray(np.stack([smooth_field(grid, rng) for _ in range(6)], -1))
u0 = jnp.asarray(initial_field(grid, seed=1))
probe = jnp.asarray(np.random.default_rng(2).normal(size=grid.shape))
out = {}
for name, mesh in (("one", None), ("mesh", device_mesh(1, 4))):
    hc = HardConstraint(Heat2D(viscosity=0.02, advection=0.5), grid, (1, 2, 2), 40,
                        row_weights=RowWeights(ridge=1e-6), solver=LevenbergMarquardt(rtol=1e-10, atol=1e-14),
                        initial_condition="construction", overlap=(0, 2, 2), blend=True, time_slabs=2, mesh=mesh)
    loss = lambda b, a: jnp.sum(probe * hc(b, a, jax.random.key(0)).u)
    value, (g_b, g_u) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(basis, u0)
    steps = hc(basis, u0, jax.random.key(0)).solution.num_steps
    out[name] = {"loss": float(value), "g_b": np.asarray(g_b).ravel().tolist(), "g_u": np.asarray(g_u).ravel().tolist(),
                 "steps": np.asarray(steps).tolist()}
print(json.dumps(out))
"""


def test_time_slabs_on_a_mesh_of_4_devices_give_the_one_device_values(tmp_path):
    """``time_slabs=2``: each slab's four experts sharded over a 1 x 4 mesh, the slabs chained through
    their initial conditions.  The prediction's pairing with a probe and its gradients in the basis and
    u0 equal the one-device layer's (the tests' nonlinear PDE on the torus, every solve converged)."""
    proc = subprocess.run([sys.executable, "-c", _SLABS_ON_A_MESH, str(Path(__file__).parent)], env=_env(4),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, mesh = out["one"], out["mesh"]
    assert one["steps"] == mesh["steps"] and len(one["steps"]) == 8 and max(one["steps"]) < 200
    assert _close(one["loss"], mesh["loss"], 1e-12)
    for key in ("g_b", "g_u"):
        a, b = np.asarray(one[key]), np.asarray(mesh[key])
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-11 * np.abs(a).max())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_train_as_one_process(tmp_path):
    """`pihc train --coordinator --num-processes 2 --process-id I` on localhost, two CPU devices per
    process (gloo collectives), a 2 x 2 mesh: the batch split across the processes, the experts
    across each one's devices.  Process 0 writes the run; it matches one process on one device."""
    from pihc.training.config import save_config
    from pihc.training.loop import train

    cfg = tiny_config(tmp_path, **CONFIG)
    save_config(cfg, tmp_path / "tiny.yaml")
    run, steps = tmp_path / "two", 3
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps({"config": CONFIG, "data_dir": str(tmp_path), "config_file": str(tmp_path / "tiny.yaml"),
                                "jobs": [{"out": str(run), "max_steps": steps}]}))
    port = _free_port()
    procs = []
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, str(WORKER), str(spec), "--coordinator", f"localhost:{port}", "--num-processes",
                 "2", "--process-id", str(i), "--set", "mesh.batch=2", "--set", "mesh.expert=2"],
                env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
    finally:  # a hung or failed process never outlives the test
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    train(cfg, tmp_path / "one", max_steps=steps, progress=False, log=lambda s: None)
    assert len(metrics(run)) == steps
    _same_metrics(metrics(tmp_path / "one"), metrics(run))
    _same_state(tmp_path, tmp_path / "one", run)


def test_auto_split_puts_most_devices_on_experts_then_on_the_batch():
    """Against a search over every mesh that fits: the most expert devices, then the most batch devices."""
    from pihc.sharding import auto_split

    for n in range(1, 17):
        for experts in (1, 2, 3, 4, 8, 12):
            for batch in (1, 2, 3, 4, 6, 8):
                fits = [(e, b) for e in range(1, n + 1) for b in range(1, n + 1)
                        if b * e <= n and experts % e == 0 and batch % b == 0 and n % (b * e) == 0]
                e, b = max(fits)
                assert auto_split(n, experts, batch) == (b, e), (n, experts, batch)


@pytest.mark.parametrize("override,message", [
    ("mesh.expert=3", "mesh.expert = 3 does not divide the 4 expert(s) of the model; choose a divisor of 4"),
    ("mesh.batch=3", "mesh.batch = 3 does not divide optim.batch = 4; choose a divisor of 4"),
    ("mesh.expert=0", "mesh.expert must be >= 1, got 0"),
    ("mesh.cores=2", "mesh: unknown key(s) ['cores']"),
])
def test_impossible_meshes_are_refused_by_name(tmp_path, override, message):
    from pihc.training.config import Config, ConfigError, apply_overrides, from_dict, to_dict, validate

    d = apply_overrides(to_dict(tiny_config(tmp_path, **CONFIG)), [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(from_dict(Config, d))


def test_a_mesh_of_more_devices_than_there_are_is_refused_before_any_compute(tmp_path, capsys):
    from pihc.cli import main
    from pihc.training.config import ConfigError, save_config
    from pihc.training.loop import train

    cfg = tiny_config(tmp_path, **{**CONFIG, "mesh__batch": 2})
    with pytest.raises(ConfigError, match=r"mesh \{batch: 2, expert: 1\} needs 2 devices; there are 1"):
        train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert not (tmp_path / "run").exists()
    save_config(tiny_config(tmp_path, **CONFIG), tmp_path / "tiny.yaml")
    assert main(["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
                 "--devices", "3", "--quiet"]) == 2
    assert "error: --devices 3: this machine has 1 device; give at most 1" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
                 "--coordinator", "localhost", "--num-processes", "2", "--process-id", "0", "--quiet"]) == 2
    assert "must be HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_lockstep_counts_lanes_times_the_slowest_lane_of_each_device():
    """benchmarks/scaling.py's count, against a hand count."""
    import runpy

    lockstep = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"))["lockstep"]
    steps = np.array([[1, 5, 2, 2], [3, 1, 1, 1]])  # (samples, experts)
    assert lockstep(steps, 4) == {"needed": 16, "computed": 8 * 5, "computed_over_needed": 40 / 16}
    # two devices of two experts: max 5 over experts 0-1, 2 over experts 2-3, 4 lanes each
    assert lockstep(steps, 2)["computed"] == 4 * 5 + 4 * 2
    assert lockstep(steps, 1)["computed"] == 2 * 3 + 2 * 5 + 2 * 2 + 2 * 2
    assert lockstep(steps, 1, batch_rows=2)["computed"] == 16
