"""Command-line interface: ``pihc generate | data info | train | evaluate | configs | bench | demo``.

Run ``pihc COMMAND --help`` for each command's options.  Every command runs
the solver layer in float64 (it switches JAX's x64 mode on at start).

Every refusal is one line on stderr, ``error: ...``, saying what to do, and
a nonzero exit: 2 for bad input (arguments, configs, paths, damaged files),
1 for a run that fails (divergence, a locked run directory, predictions
that are not finite), 128 + the signal's number when stopped by SIGINT or
SIGTERM (training saves its last finished step first; temporary files are
removed), and 141 without a message when the reader of its output has gone
(``pihc configs | head -3``).  Arguments are checked before any compute.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised in the main thread like Ctrl-C, so that every ``finally`` runs:
    temporary files are removed, worker processes killed, the last training step saved."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _x64():
    import jax

    jax.config.update("jax_enable_x64", True)


def _cmd_generate_config(a) -> int:
    """``pihc generate --config CONFIG``: the config's data file (a sampled problem: its held-out reference)."""
    import dataclasses

    from .training.config import load_config
    from .training.data import ensure_reference, prepare_data
    from .training.problems import problem_of

    cfg = load_config(a.config, list(a.set) + ([f"data.path={a.out}"] if a.out else []))
    if a.samples is not None:
        g = dataclasses.replace(cfg.data.generate, samples=a.samples)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, generate=g, test_samples=min(
            cfg.data.test_samples, a.samples - 1) if a.samples > 1 else 1))
    if Path(cfg.data.path).exists():
        raise FileExistsError(f"{cfg.data.path} exists; remove it or give another --out")
    problem = problem_of(cfg)
    if problem.initial is not None and problem.solve is None:
        raise UsageError(f"{cfg.problem} has no reference solver (define solve(u0, grid) on it): there is"
                         " nothing to generate; training needs no data")
    log = (lambda s: None) if a.quiet else print
    data = prepare_data(cfg, log, progress=not a.quiet)  # a registered problem's file is generated here
    ensure_reference(cfg, data, log, progress=not a.quiet)
    print(json.dumps({"written": cfg.data.path, "problem": cfg.problem}))
    return 0


def _refuse_config_with_problem(a) -> None:
    if getattr(a, "config", None) and getattr(a, "problem", None):
        raise UsageError("give either a problem (pihc generate diffusion-sorption ...) or --config, not both")


def _cmd_generate(a) -> int:
    _refuse_config_with_problem(a)
    if a.config:
        return _cmd_generate_config(a)
    if not getattr(a, "problem", None):
        raise UsageError("give a problem (pihc generate diffusion-sorption ...) or --config CONFIG")
    from .data.diffusion_sorption import IC_FAMILIES, generate_diffusion_sorption
    from .files import check_writable

    if a.ic not in IC_FAMILIES:
        raise UsageError(f"unknown --ic {a.ic!r}; choose from {', '.join(IC_FAMILIES)}")
    check_writable(a.out, "--out")
    out = generate_diffusion_sorption(a.out, samples=a.samples, nx=a.nx, nt=a.nt, seed=a.seed, ic=a.ic,
                                      batch=a.batch, progress=not a.quiet)
    print(json.dumps({"written": str(out), "samples": a.samples, "nt": a.nt, "nx": a.nx, "seed": a.seed}))
    return 0


def _cmd_generate_ns(a) -> int:
    from .data.navier_stokes import check_generate_args, generate_navier_stokes
    from .files import check_writable

    _refuse_config_with_problem(a)
    ny = a.nx if a.ny is None else a.ny
    try:
        check_generate_args(samples=a.samples, nx=a.nx, ny=ny, nt=a.nt, t_end=a.t_end, viscosity=a.viscosity,
                            seed=a.seed, solve_nx=a.solve_nx, substeps=a.substeps, batch=a.batch, dtype=a.dtype)
    except ValueError as err:  # the library's names, as the options are spelt
        msg = str(err)
        for lib, opt in (("solve_nx", "--solve-nx"), ("t_end", "--t-end")):
            msg = msg.replace(lib, opt)
        raise UsageError(msg) from None
    check_writable(a.out, "--out")
    out = generate_navier_stokes(a.out, samples=a.samples, nx=a.nx, ny=ny, nt=a.nt, t_end=a.t_end,
                                 viscosity=a.viscosity, seed=a.seed, solve_nx=a.solve_nx, substeps=a.substeps,
                                 batch=a.batch, dtype=a.dtype, progress=not a.quiet)
    print(json.dumps({"written": str(out), "samples": a.samples, "nt": a.nt, "nx": a.nx, "ny": ny,
                      "seed": a.seed}))
    return 0


def _cmd_data_info(a) -> int:
    from .data.hdf5 import info
    from .data.reference import is_reference, reference_info

    d = (reference_info if is_reference(a.path) else info)(a.path, check=a.check)
    print(json.dumps(d, indent=2, default=str))
    bad = d.get("bad_samples") or []
    if a.check and bad:
        print(f"error: {len(bad)} sample(s) of {a.path} contain NaN or Inf: {', '.join(map(str, bad[:20]))}"
              + (" ..." if len(bad) > 20 else ""), file=sys.stderr)
        return 1
    return 0


def _distributed(a) -> bool:
    """Join a multi-process run (:func:`jax.distributed.initialize`) when asked; True if joined.

    Explicit ``--coordinator/--num-processes/--process-id``, or ``--distributed`` alone to let
    JAX read them from a cluster scheduler's environment (SLURM, Open MPI, ...).  Checked
    before JAX starts its devices."""
    explicit = (a.coordinator, a.num_processes, a.process_id)
    if all(v is None for v in explicit) and not a.distributed:
        return False
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise UsageError("a multi-process run needs all of --coordinator HOST:PORT, --num-processes P and"
                             " --process-id I (or --distributed alone, inside a cluster job)")
        host, _, port = a.coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--coordinator {a.coordinator!r} must be HOST:PORT, e.g. node001:12345")
        if a.process_id >= a.num_processes:
            raise UsageError(f"--process-id {a.process_id} must be below --num-processes {a.num_processes}")
    import jax

    # CPU devices of several processes talk through gloo; GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=a.coordinator, num_processes=a.num_processes,
                                   process_id=a.process_id)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"cannot join the multi-process run ({_one_line(err)}); give --coordinator,"
                         " --num-processes and --process-id, or run inside a cluster job (e.g. srun)") from None
    return True


def _with_devices(cfg, devices: str | None, log, distributed: bool = False):
    """``cfg`` with its mesh for ``--devices`` (``auto``: every device; N: the first N).  A
    multi-process run whose config keeps the default one-device mesh uses every device."""
    if devices is None and distributed and (cfg.mesh.batch, cfg.mesh.expert) == (1, 1):
        devices = "auto"
    if devices is None:
        return cfg
    import dataclasses

    import jax

    from .sharding import auto_split
    from .training.config import MeshConfig, n_experts

    if devices == "auto":
        n = jax.device_count()
    elif devices.isdigit() and int(devices) >= 1:
        n = int(devices)
        if n > jax.device_count():
            have = jax.device_count()
            raise UsageError(f"--devices {n}: this machine has {have} device{'s' if have > 1 else ''}; give at most"
                             f" {have}, or auto")
    else:
        raise UsageError(f"--devices must be auto or a number of devices >= 1, got {devices!r}")
    batch, expert = auto_split(n, n_experts(cfg), cfg.optim.batch)
    if batch * expert < n:
        log(f"--devices {devices}: {n} devices, of which a mesh of batch {batch} x expert {expert} can use"
            f" {batch * expert} ({n_experts(cfg)} expert(s), optim.batch {cfg.optim.batch})")
    return dataclasses.replace(cfg, mesh=MeshConfig(batch, expert))


def _cmd_train(a) -> int:
    from .training.config import load_config
    from .training.loop import train

    log = (lambda s: None) if a.quiet else print
    distributed = _distributed(a)
    if distributed:
        import jax

        if jax.process_index() != 0:
            log = lambda s: None  # noqa: E731
    if a.resume:
        if a.config or a.set or a.init_from or a.out:
            raise UsageError("--resume continues a run in its directory with its saved config; drop"
                             " --config/--set/--init-from/--out")
        if not (Path(a.resume) / "config.yaml").is_file():
            raise FileNotFoundError(f"{a.resume} is not a run directory (no config.yaml); give the --out"
                                    " directory of a `pihc train` run")
        cfg = _with_devices(load_config(Path(a.resume) / "config.yaml"), a.devices, log, distributed)
        run = train(cfg, a.resume, max_steps=a.max_steps, resume=True, progress=not a.quiet, log=log)
    else:
        if not a.config:
            raise UsageError("give --config FILE or a built-in config name (see configs/), or --resume RUN_DIR")
        overrides = list(a.set) + ([f"model.init_from={a.init_from}"] if a.init_from else [])
        cfg = _with_devices(load_config(a.config, overrides), a.devices, log, distributed)
        out = a.out or str(Path("runs") / Path(a.config).stem)
        run = train(cfg, out, max_steps=a.max_steps, progress=not a.quiet, log=log)
    print(json.dumps(_train_summary(Path(run))))
    return 0


def _train_summary(run: Path) -> dict:
    """The one-line summary of a training run (and its report, written with the loss plot)."""
    from .training.io import MetricsLog
    from .training.plots import plot_loss
    from .training.config import load_config
    from .training.report import write_report

    metrics = [m for m in MetricsLog(run / "metrics.jsonl").read() if not m.get("stopped")]
    out: dict = {"run": str(run)}
    if metrics:
        cfg = load_config(run / "config.yaml")
        import dataclasses

        plot_loss(run / "plots" / "loss.png", metrics, dataclasses.asdict(cfg.loss))
        out.update(steps=metrics[-1]["step"], final_loss=metrics[-1]["loss"])
        held = [m for m in metrics if "heldout_rel_l2" in m]
        if held:
            out["heldout_rel_l2"] = held[-1]["heldout_rel_l2"]
    out["report"] = str(write_report(run))
    out["next"] = f"pihc evaluate {run}"
    return out


def _cmd_configs(a) -> int:
    from .training.config import builtin_configs, load_config

    for name in builtin_configs():
        cfg = load_config(name)
        print(f"{name:36s} {cfg.problem}, {cfg.model.method}, {' x '.join(map(str, cfg.data.shape))},"
              f" {cfg.optim.steps} steps")
    return 0


def _cmd_evaluate(a) -> int:
    from .training.evaluation import evaluate
    from .training.report import write_report

    if not (Path(a.run) / "config.yaml").is_file():
        raise FileNotFoundError(f"{a.run} is not a run directory (no config.yaml); give the --out directory"
                                " of a `pihc train` run")
    if a.grid is not None and len(a.grid) not in (2, 3):
        raise UsageError(f"--grid takes NT NX, or NT NX NY for a (t, x, y) run; got {len(a.grid)} sizes")
    if a.split == "train" and a.data is not None:
        raise UsageError("--split train scores the run's own training trajectories: leave out --data")
    res = evaluate(a.run, data_path=a.data, json_out=a.json, n_samples=a.samples, plots=not a.no_plots,
                   grid=None if a.grid is None else tuple(a.grid),
                   window=None if a.window is None else tuple(a.window), split=a.split)
    if a.grid is None:  # the held-out score on the run's grid, and the training set's beside it
        write_report(a.run)  # the report shows the run on its own grid; another grid's results stand apart
    keys = ("rel_l2_mean", "rel_l2_std", "split", "samples", "method", "window")
    print(json.dumps({k: res[k] for k in keys if k in res} | {"residual": res["residual"]}, indent=2))
    return 0


# ``pihc bench NAME`` runs benchmarks/SCRIPT.py of a source checkout; the scripts are not in the package.
BENCHMARK_HELP = {
    "constraint": "the constraint layer's cost and accuracy against its size (and optimistix)",
    "constraint-ablation": "accuracy of the constraint's options (rows, weights, blending)",
    "step-cost": "seconds per training step of PI-SC, PI-HC and PI-HC-MoE",
    "step-profile": "a training step's time by part (backbone, constraint layer, loss, optimiser update)",
    "step-memory": "peak memory of a training step of PI-SC, PI-HC and PI-HC-MoE",
    "accuracy": "train and evaluate configs over seeds (the results tables)",
    "generator": "the diffusion-sorption data generator's speed and accuracy",
    "ns-generator": "the Navier-Stokes data generator's speed and accuracy against a converged solve",
    "ns-floor": "the Navier-Stokes time stencils' discretisation floor",
    "ns-small-grid-floor": "the discretisation floor of coarse Navier-Stokes grids",
    "ns-constraint": "the constraint layer at the paper's Navier-Stokes size (forward + backward)",
    "speed-points": "training-step and inference time against the number of sampled points",
    "scaling": "the constraint layer and a training step over 1-8 devices, and a cost model for GPUs and hosts",
    "basis": "a trained run's basis: the truth's best fit in its span, and the experts' terms against the whole",
}
BENCHMARKS = {
    "constraint": "constraint_scaling",
    "constraint-ablation": "constraint_ablation",
    "step-cost": "step_cost",
    "step-profile": "step_profile",
    "step-memory": "step_memory",
    "accuracy": "accuracy",
    "generator": "generator_speed",
    "ns-generator": "ns_generator",
    "ns-floor": "ns_floor",
    "ns-small-grid-floor": "ns_small_grid_floor",
    "ns-constraint": "ns_constraint_speed",
    "speed-points": "speed_points",
    "scaling": "scaling",
    "basis": "basis_diagnostics",
    "huge-pages": "huge_pages",
}


def find_benchmark(script: str) -> Path | None:
    """``benchmarks/SCRIPT.py`` under the working directory or the checkout this package runs from."""
    # src/pihc/cli.py -> the checkout's root, for an editable install or PYTHONPATH=src.
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = root / "benchmarks" / f"{script}.py"
        if path.is_file():
            return path
    return None


def _bench_usage() -> str:
    rows = "\n".join(f"  {name:20s} {BENCHMARK_HELP.get(name, '')} (benchmarks/{script}.py)"
                     for name, script in BENCHMARKS.items())
    return ("usage: pihc bench NAME [ARGS ...]\n\nRun a benchmark script of a source checkout; it prints and saves"
            " JSON (docs/benchmarks.md).\n`pihc bench NAME --help` shows the script's own options.\n\n"
            f"benchmarks:\n{rows}\n")


def _cmd_bench(name: str, rest: list[str]) -> int:
    import runpy

    script = BENCHMARKS.get(name, name if name in BENCHMARKS.values() else None)
    if script is None:
        print(f"error: unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    path = find_benchmark(script)
    if path is None:
        print(f"error: the benchmarks ship with the source repository, not the package; run `pihc bench {name}`"
              f" (or `python benchmarks/{script}.py`) in a checkout of pihc", file=sys.stderr)
        return 2
    argv, search = sys.argv, list(sys.path)
    # As `python benchmarks/SCRIPT.py` would: the script's folder first, for the helpers beside it.
    sys.argv, sys.path[:0] = [str(path), *rest], [str(path.parent)]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, search
    return 0


def _cmd_demo(a) -> int:
    from .training.demo import run_demo

    run_demo(a.out, **({} if a.max_steps is None else {"max_steps": a.max_steps}))
    return 0


class UsageError(ValueError):
    """Arguments that do not go together."""


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help line ends with its default (``unset``, ``off`` or the value), unless it says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        d = action.default
        shown = "unset" if d is None else "off" if d is False else "none" if d == [] else "%(default)s"
        return f"{text} (default: {shown})"


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line, ``error: ...``, that says where the options are listed."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)  # every option's default
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    parse.__name__ = f"integer >= {lo}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    positive, grid_points, non_negative = _int_at_least(1), _int_at_least(2), _int_at_least(0)
    p = _Parser(prog="pihc", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a dataset with pihc's numerical solver",
                       description="Generate a dataset: `pihc generate diffusion-sorption ...`, or the data file of a"
                                   " config with `pihc generate --config CONFIG` (for a pihc.Problem with a solver:"
                                   " the reference solutions of its held-out samples).")
    g.add_argument("--config", help="a config (YAML file or built-in name): write its data.path")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry (with --config; repeatable)")
    g.add_argument("--samples", type=positive, default=None,
                   help="with --config: data.generate.samples (default: the config's)")
    g.add_argument("--out", default=None, help="with --config: the file to write (default: the config's data.path)")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=_cmd_generate, problem=None)
    gsub = g.add_subparsers(dest="problem", required=False, metavar="PROBLEM")
    ds = gsub.add_parser("diffusion-sorption", help="1D diffusion-sorption (PDEBench's problem)")
    ds.add_argument("--samples", type=positive, required=True, help="number of trajectories")
    ds.add_argument("--nx", type=grid_points, default=1024, help="cells in x")
    ds.add_argument("--nt", type=grid_points, default=101, help="times in [0, 500], both ends included")
    ds.add_argument("--seed", type=non_negative, default=0, help="sample i is seeded by seed + i")
    ds.add_argument("--ic", default="pdebench", help="initial-condition family (pdebench | smooth)")
    ds.add_argument("--batch", type=positive, default=4,
                    help="trajectories per stiff solve (4 is fastest: a larger batch moves every sample at its"
                         " slowest member's step); batches run in parallel, one process per core")
    ds.add_argument("--out", required=True, help="HDF5 file to write (atomically)")
    ds.add_argument("--quiet", action="store_true", help="no progress bar")
    # No `config` default here: a subcommand's defaults would overwrite the parent's --config.
    ds.set_defaults(func=_cmd_generate)

    ns = gsub.add_parser("navier-stokes", help="2D Navier-Stokes (vorticity form) on the periodic unit square")
    ns.add_argument("--samples", type=positive, required=True, help="number of trajectories")
    ns.add_argument("--nx", type=int, default=64, help="points along x on [0, 1)")
    ns.add_argument("--ny", type=int, default=None, help="points along y (unset: --nx)")
    ns.add_argument("--nt", type=int, default=64, help="snapshots on [0, t_end], t = 0 included")
    ns.add_argument("--t-end", type=float, default=5.0, help="final time")
    ns.add_argument("--viscosity", type=float, default=1e-4, help="the kinematic viscosity nu")
    ns.add_argument("--seed", type=int, default=0, help="sample i's initial condition uses seed + i")
    ns.add_argument("--solve-nx", type=int, default=None,
                    help="solve on this many points per axis (a multiple of --nx) and sample back (unset: the"
                         " smallest multiple of --nx that is at least 64)")
    ns.add_argument("--substeps", type=int, default=None,
                    help="time steps per snapshot interval (unset: dt <= 0.04 x 64 / solve points)")
    ns.add_argument("--batch", type=int, default=16, help="trajectories per vmapped solve")
    ns.add_argument("--dtype", default="float32", help="stored precision: float32 or float64")
    ns.add_argument("--out", required=True, help="HDF5 file to write (atomically)")
    ns.add_argument("--quiet", action="store_true", help="no progress bar")
    ns.set_defaults(func=_cmd_generate_ns)

    d = sub.add_parser("data", help="inspect datasets")
    dsub = d.add_subparsers(dest="action", required=True)
    di = dsub.add_parser("info", help="print a JSON summary of a dataset file")
    di.add_argument("path", help="an HDF5 dataset (diffusion-sorption, PDEBench's, or a problem's reference file)")
    di.add_argument("--check", action="store_true", help="scan every sample for NaN/Inf (exit 1 if any)")
    di.set_defaults(func=_cmd_data_info)

    t = sub.add_parser("train", help="train a model from a config")
    t.add_argument("--config", help="YAML config, or a built-in config's name (`pihc configs` lists them)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set optim.steps=100 (repeatable)")
    t.add_argument("--max-steps", type=positive, help="stop after this many steps (resume later)")
    t.add_argument("--out", help="run directory (default: runs/<config name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    t.add_argument("--init-from", metavar="RUN_DIR",
                   help="start from the backbone of a trained run, e.g. one on a coarser grid"
                        " (same as --set model.init_from=RUN_DIR)")
    t.add_argument("--devices", metavar="auto|N",
                   help="train on a mesh of this many devices (auto: all), split between the experts and the"
                        " batch (sets the config's mesh; see docs/scaling.md); also with --resume")
    t.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-host run: the address of process 0 (with --num-processes and --process-id)")
    t.add_argument("--num-processes", type=positive, metavar="P", help="multi-host run: how many processes")
    t.add_argument("--process-id", type=non_negative, metavar="I", help="multi-host run: this process, 0 .. P-1")
    t.add_argument("--distributed", action="store_true",
                   help="multi-host run configured by the cluster's environment (SLURM, Open MPI)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or log lines; only the summary")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a trained run against the numerical solution")
    e.add_argument("run", help="a run directory (the --out of `pihc train`)")
    e.add_argument("--data", help="another dataset file (a finer grid is subsampled)")
    e.add_argument("--json", help="where to write the metrics (default RUN/evaluation.json)")
    e.add_argument("--samples", type=positive, help="evaluate only the first N samples of the split")
    e.add_argument("--split", choices=("test", "train"), default="test",
                   help="score the held-out trajectories (test) or the run's own training ones (train, as many"
                        " as are held out unless --samples; to RUN/evaluation-train.json)")
    e.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    e.add_argument("--grid", type=grid_points, nargs="+", metavar="N",
                   help="NT NX (or NT NX NY): run the model on another grid (same backbone, constraint rebuilt"
                        " there), e.g. --grid 101 1024 --data FILE for a model trained on 51 x 256, or"
                        " --grid 64 256 256 --data FILE for one trained on 64 x 64 x 64")
    e.add_argument("--window", type=float, nargs=2, metavar=("T0", "T1"),
                   help="also score the times T0 < t <= T1 alone, e.g. --window 400 500 (default: the times after"
                        " the training window of a run trained with data.train_until; else none)")
    e.set_defaults(func=_cmd_evaluate)

    b = sub.add_parser("bench", help="run a benchmark of a source checkout, benchmarks/SCRIPT.py ("
                                     + " | ".join(BENCHMARKS) + ")",
                       add_help=False)
    b.add_argument("name", help="the benchmark (`pihc bench --help` lists them)")
    b.set_defaults(func=None)

    m = sub.add_parser("demo", help="generate data, train the small MoE config, evaluate, report")
    m.add_argument("--out", default="runs/demo", help="the demo's run directory")
    m.add_argument("--max-steps", type=positive, default=None,
                   help="training steps of the demo, with the schedule scaled to match (default: the demo"
                        " config's own 1000)")
    m.set_defaults(func=_cmd_demo)

    c = sub.add_parser("configs", help="list the built-in configs (give one to `pihc train --config NAME`)")
    c.set_defaults(func=_cmd_configs)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if argv[:1] == ["bench"] and len(argv) > 1 and not argv[1].startswith("-"):
        return _cmd_bench(argv[1], argv[2:])  # the script parses the rest
    if argv[:1] == ["bench"]:  # ``pihc bench``, ``pihc bench --help``: the list of benchmarks
        print(_bench_usage(), end="", file=sys.stdout if argv[1:2] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[1:2] in (["-h"], ["--help"]) else 2
    try:
        a = parser.parse_args(argv)  # (``bench`` without NAME: its usage)
    except SystemExit as exit_:  # a usage error (2) or --help (0), already printed
        return exit_.code if isinstance(exit_.code, int) else 1
    import signal
    import threading

    handlers = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        handlers = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        _x64()
        return _run(a)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)


def _run(a) -> int:
    """``a.func(a)`` with every failure of a known kind as one line on stderr and an exit code."""
    from .training.errors import bad_input_errors
    from .training.evaluation import EvaluationError
    from .training.loop import DivergenceError
    from .training.run import RunLockedError

    bad_input = (*bad_input_errors(), UsageError)
    try:
        code = a.func(a)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except bad_input as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (DivergenceError, EvaluationError, RunLockedError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. a full disk: the file being written is left as it was
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            # The reader of the output left (`pihc configs | head -3`): stop without a message, as other
            # command-line tools do, with the exit status of a process ended by SIGPIPE.
            import os
            import signal

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush cannot fail
            return 128 + signal.SIGPIPE
        print(f"error: {_one_line(err)}; nothing was half-written, fix the cause and run again", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        import signal

        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        print(f"error: stopped by {signal.Signals(signum).name}; temporary files were removed"
              + ("; continue with `pihc train --resume RUN_DIR`" if a.command == "train" else ""),
              file=sys.stderr)
        return 128 + signum


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (its write end polls as an error)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (a replaced sys.stdout), no poll
        return False


def _one_line(err: BaseException) -> str:
    from .training.errors import one_line

    return one_line(err)


if __name__ == "__main__":
    raise SystemExit(main())
