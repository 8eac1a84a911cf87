"""Train and evaluate several configs side by side on one GPU, within a wall-clock deadline, resumably.

A GPU machine is often lent for a few minutes at a time.  This driver makes
each call count:

1. generates the dataset of the first variant's config when it is missing
   (``pihc generate --config``, on the host's cores), and meanwhile, with ``--speed``,
   runs ``benchmarks/speed_points.py`` on the idle GPU (stopped when the data
   are ready, plus ``--speed-grace`` seconds; it saves after every point count);
2. starts every variant at once: ``pihc train --config ...`` for a new run,
   ``pihc train --resume RUN`` for one with a checkpoint, nothing for one that
   finished; ``pihc evaluate`` follows each finished training;
3. at ``--deadline`` seconds after the start sends SIGTERM to the trainings
   still running (each saves its last finished step: the next call resumes
   there) and waits for them;
4. writes ``OUT/summary.json`` (per variant: steps done, last loss, the
   evaluation's errors) and ``OUT/runs.tar.gz`` (configs, metrics, logs and
   evaluations; no checkpoints or plots), refreshed every 30 s.

    python benchmarks/gpu_runs.py benchmarks/sweeps/paper_scale.txt --out OUT --deadline 540 --speed

VARIANTS_FILE: one variant per line, ``NAME CONFIG [--set key=value ...]
[--max-steps N]``; ``#`` starts a comment.  ``--max-steps N`` trains the run
to step N (at most the config's ``optim.steps``) across calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def read_variants(path: Path) -> list[tuple[str, str, list[str]]]:
    """``(name, config, [flag, value, ...])`` per variant line (flags ``--set`` and ``--max-steps``); a
    malformed file is refused by line."""
    from pihc.training.config import ConfigError

    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, *words = shlex.split(line)
        if not words:
            raise ConfigError(f"{path}:{i}: variant {name!r} names no config; write NAME CONFIG [--set key=value ...]")
        config, *rest = words
        flags = list(zip(rest[::2], rest[1::2]))
        if len(rest) % 2 or any(not (f == "--set" and "=" in v or f == "--max-steps" and v.isdigit() and int(v) > 0)
                                for f, v in flags) or [f for f, _ in flags].count("--max-steps") > 1:
            raise ConfigError(f"{path}:{i}: after the config only `--set key=value` pairs and one `--max-steps N`"
                              f" (N >= 1) may follow, got {' '.join(rest)!r}")
        if any(name == n for n, _, _ in out):
            raise ConfigError(f"{path}:{i}: variant name {name!r} is used twice; each names its own run directory")
        out.append((name, config, rest))
    if not out:
        raise ConfigError(f"{path} holds no variant; write one per line: NAME CONFIG [--set key=value ...]")
    return out


def _flag_values(rest: list[str], flag: str) -> list[str]:
    """The values given to ``flag`` in a variant's ``[flag, value, ...]`` (:func:`read_variants`)."""
    return [v for f, v in zip(rest[::2], rest[1::2]) if f == flag]


def run_state(run: Path, steps: int) -> str:
    """``new``, ``partial`` (a checkpoint to resume), ``trained`` or ``evaluated``."""
    if (run / "evaluation.json").is_file():
        return "evaluated"
    if not (run / "checkpoint.eqx").is_file():
        return "new"
    done = last_step(run)
    return "trained" if done >= steps else "partial"


def last_step(run: Path) -> int:
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def summary(root: Path, variants, steps_of) -> dict:
    out = {}
    for name, config, rest in variants:
        run = root / name
        rec = {"config": config, "overrides": rest, "steps_done": last_step(run), "steps": steps_of[name]}
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").is_file() else []
        recent = [json.loads(x) for x in lines[-100:] if x.strip()]
        losses = [r["loss"] for r in recent if isinstance(r.get("loss"), (int, float))]
        if losses:
            rec["loss_mean_last_100"] = sum(losses) / len(losses)
        times = sorted(r["step_time_s"] for r in recent if isinstance(r.get("step_time_s"), (int, float)))
        if times:
            rec["median_step_s_shared_gpu"] = times[len(times) // 2]
        ev = run / "evaluation.json"
        if ev.is_file():
            e = json.loads(ev.read_text())
            rec["evaluation"] = {k: e.get(k) for k in ("samples", "grid", "rel_l2_mean", "rel_l2_std", "rel_l2_median",
                                                         "rel_l2_max", "window", "residual", "seams")}
            rec["evaluation"]["rel_l2_over_time_every_10"] = e["rel_l2_over_time"][::10]
            if "experts" in e:
                rec["evaluation"]["failed_solves"] = e["experts"]["failed_solves"]
                rec["evaluation"]["solver_steps_max"] = e["experts"]["solver_steps_max"]
        out[name] = rec
    return out


def pack(root: Path, out: Path, variants, steps_of) -> None:
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary(root, variants, steps_of), indent=1))
    tmp.replace(out / "summary.json")
    tmp = out / "runs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for name, _, _ in variants:
            for f in ("config.yaml", "metrics.jsonl", "evaluation.json", "train.log", "evaluate.log", "report.md"):
                p = root / name / f
                if p.is_file():
                    tar.add(p, arcname=f"{name}/{f}")
    tmp.replace(out / "runs.tar.gz")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", type=Path)
    p.add_argument("--root", type=Path, default=Path("runs/gpu"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu-out")))
    p.add_argument("--deadline", type=float, default=540.0, help="seconds after the start to stop training")
    p.add_argument("--speed", action="store_true", help="run benchmarks/speed_points.py while the data generate")
    p.add_argument("--speed-grace", type=float, default=20.0)
    p.add_argument("--speed-args", default="--points 100 1000 10000 100000 --repeats 3")
    a = p.parse_args(argv)
    t_start = time.monotonic()
    py = sys.executable
    env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env["PYTHONPATH"] = str(SRC) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    from pihc.training.config import ConfigError, load_config

    if not a.variants.is_file():
        raise FileNotFoundError(f"{a.variants} is not a file; give a variants file (one line per run: NAME CONFIG"
                                " [--set key=value ...]), e.g. benchmarks/sweeps/paper_scale.txt")
    variants = read_variants(a.variants)
    cfgs = {}
    for name, config, rest in variants:  # every config checked before anything starts
        try:
            cfgs[name] = load_config(config, _flag_values(rest, "--set"))
        except ConfigError as err:
            raise ConfigError(f"{a.variants}: variant {name!r}: {err}") from None
    # Each run's target: the config's steps, or fewer with --max-steps.
    steps_of = {name: min([cfgs[name].optim.steps] + [int(n) for n in _flag_values(rest, "--max-steps")])
                for name, _, rest in variants}
    a.out.mkdir(parents=True, exist_ok=True)
    a.root.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(f"[{time.monotonic() - t_start:6.1f} s] {s}", flush=True)  # noqa: E731

    first_name, first_config, first_rest = variants[0]
    data = Path(cfgs[first_name].data.path)
    gen = None
    if not data.is_file():
        log(f"generating {data}")
        # From the config's whole data.generate section (a Navier-Stokes config's solve_nx and
        # viscosity included), once, before the variants start side by side.
        sets = [x for kv in _flag_values(first_rest, "--set") for x in ("--set", kv)]
        gen = subprocess.Popen([py, "-m", "pihc.cli", "generate", "--config", first_config, *sets, "--quiet"],
                               env=env)
    speed = None
    if a.speed:
        sp = Path("data/ds-speed.h5")
        args = ["--config", variants[0][1], "--set", f"data.path={sp}", "--set", "data.generate.samples=16",
                "--set", "data.train_samples=8", "--set", "data.test_samples=8", *shlex.split(a.speed_args),
                "--out", str(a.out / "speed_points_gpu.json")]
        log("speed benchmark: " + " ".join(args))
        speed = subprocess.Popen([py, "benchmarks/speed_points.py", *args], env=env,
                                 stdout=open(a.out / "speed.log", "a"), stderr=subprocess.STDOUT)
    if gen is not None:
        if gen.wait() != 0:
            log("data generation failed")
            return 1
        log("data ready")
    if speed is not None:
        try:
            speed.wait(timeout=a.speed_grace if gen is not None else None)
        except subprocess.TimeoutExpired:
            speed.send_signal(signal.SIGTERM)
            speed.wait()
            log("speed benchmark stopped (the points it finished are saved)")

    procs: dict[str, subprocess.Popen] = {}
    phase: dict[str, str] = {}

    def launch(name, config, rest):
        run = a.root / name
        state = run_state(run, steps_of[name])
        if state == "new":
            cmd = ["train", "--config", config, "--out", str(run), "--quiet", *rest]  # with --max-steps: the target
        elif state == "partial":
            cmd = ["train", "--resume", str(run), "--quiet"]
            if steps_of[name] < cfgs[name].optim.steps:  # --max-steps counts from the resumed step
                cmd += ["--max-steps", str(steps_of[name] - last_step(run))]
        elif state == "trained":
            cmd = ["evaluate", str(run), "--no-plots"]
        else:
            return
        run.mkdir(parents=True, exist_ok=True)
        what = cmd[0]
        logf = open(run / f"{'train' if what == 'train' else 'evaluate'}.log", "a")
        procs[name] = subprocess.Popen([py, "-m", "pihc.cli", *cmd], env=env, stdout=logf, stderr=subprocess.STDOUT)
        phase[name] = what
        log(f"{name}: {' '.join(cmd)}")

    for v in variants:
        launch(*v)
    stopped = False
    last_pack = 0.0
    while procs:
        time.sleep(2)
        for name, proc in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[name]
            log(f"{name}: {phase[name]} exited with {proc.returncode}")
            if proc.returncode == 0 and not stopped:
                launch(*next(v for v in variants if v[0] == name))
        if not stopped and time.monotonic() - t_start > a.deadline:
            stopped = True
            log("deadline: stopping the trainings (each saves its last step)")
            for name, proc in procs.items():
                if phase[name] == "train":
                    proc.send_signal(signal.SIGTERM)
        if time.monotonic() - last_pack > 30:
            pack(a.root, a.out, variants, steps_of)
            last_pack = time.monotonic()
    pack(a.root, a.out, variants, steps_of)
    log("done: " + json.dumps({n: (r["steps_done"], r.get("evaluation", {}).get("rel_l2_mean"))
                               for n, r in summary(a.root, variants, steps_of).items()}))
    return 0


if __name__ == "__main__":
    # The checkout's own source first: a lent machine runs this from a copy of the tree, not installed.
    sys.path.insert(0, str(SRC))
    from pihc.training.errors import refuse_bad_input

    sys.exit(refuse_bad_input(main))  # bad input: one `error:` line and status 2, as `pihc` gives
