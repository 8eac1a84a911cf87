"""Runs training jobs on forced CPU devices, in a process of its own (``tests/test_scale_out.py``).

JAX fixes its number of CPU devices when its backend starts, so the tests on
meshes of several devices run here, in a subprocess started with
``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, while the rest of
the suite keeps its one device.  Usage::

    python tests/_scale_out.py JOBS.json

``JOBS.json``: ``{"config": {...tiny_config overrides...}, "data_dir": DIR, "cache": DIR,
"jobs": [{"out": DIR, "mesh": [B, E], "max_steps": n, "resume": bool, "copy_to": [DIR, ...]}, ...]}``,
run in order; ``copy_to``: copies of the run directory after the job.
With more arguments (``--coordinator HOST:PORT --num-processes P --process-id I ...``), it is
one process of a multi-process run: ``pihc train --config CONFIG_FILE --out OUT --max-steps N``
of the single job, with those arguments appended (``config_file`` in JOBS.json).
"""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def main(argv):
    spec = json.loads(Path(argv[0]).read_text())
    if spec.get("cache"):  # the same program on the same mesh compiles once per process tree
        jax.config.update("jax_compilation_cache_dir", spec["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import dataclasses

    from _tiny import QUIET, tiny_config

    from pihc.training.config import MeshConfig
    from pihc.training.loop import train

    cfg = tiny_config(Path(spec["data_dir"]), **spec["config"])
    if len(argv) > 1:  # one process of several: through the command line, as a user runs it
        from pihc.cli import main as cli

        (job,) = spec["jobs"]
        raise SystemExit(cli(["train", "--config", spec["config_file"], "--out", job["out"], "--max-steps",
                              str(job["max_steps"]), "--quiet", *argv[1:]]))
    for job in spec["jobs"]:
        run_cfg = dataclasses.replace(cfg, mesh=MeshConfig(*job["mesh"]))
        train(run_cfg, job["out"], max_steps=job["max_steps"], resume=job.get("resume", False), **QUIET)
        for copy in job.get("copy_to", []):
            shutil.copytree(job["out"], copy)


if __name__ == "__main__":
    main(sys.argv[1:])
