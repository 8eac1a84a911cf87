"""Train and evaluate several configs side by side on one GPU, within a wall-clock deadline, resumably.

A GPU machine is often lent for a few minutes at a time.  This driver makes
each call count:

1. generates the dataset of the first variant's config when it is missing
   (``pihc generate``, on the host's cores), and meanwhile, with ``--speed``,
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

VARIANTS_FILE: one variant per line, ``NAME CONFIG [--set key=value ...]``;
``#`` starts a comment.
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


def read_variants(path: Path) -> list[tuple[str, str, list[str]]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, config, *rest = shlex.split(line)
            out.append((name, config, rest))
    return out


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
    env["PYTHONPATH"] = str(Path("src").resolve()) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    sys.path.insert(0, str(Path("src").resolve()))
    from pihc.training.config import load_config

    variants = read_variants(a.variants)
    cfgs = {name: load_config(config, [s for i, s in enumerate(rest) if i and rest[i - 1] == "--set"])
            for name, config, rest in variants}
    steps_of = {name: c.optim.steps for name, c in cfgs.items()}
    a.out.mkdir(parents=True, exist_ok=True)
    a.root.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(f"[{time.monotonic() - t_start:6.1f} s] {s}", flush=True)  # noqa: E731

    first = cfgs[variants[0][0]]
    data = Path(first.data.path)
    gen = None
    if not data.is_file():
        g = first.data.generate
        log(f"generating {data}")
        data.parent.mkdir(parents=True, exist_ok=True)
        gen = subprocess.Popen([py, "-m", "pihc.cli", "generate", first.problem, "--samples", str(g.samples),
                                "--nx", str(g.nx), "--nt", str(g.nt), "--seed", str(g.seed), "--ic", g.ic,
                                "--out", str(data), "--quiet"], env=env)
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
            cmd = ["train", "--config", config, "--out", str(run), "--quiet", *rest]
        elif state == "partial":
            cmd = ["train", "--resume", str(run), "--quiet"]
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
    sys.exit(main())
