"""``make demo`` / ``pihc demo``: data, training, evaluation and report on a small problem."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import load_config
from .io import read_checkpoint_meta

DEMO_CONFIG = "diffusion-sorption/moe-small"
DEMO_STEPS = 400  # ~3.5 min on 2 cores, so `make demo` fits in 10 minutes with its set-up


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = DEMO_STEPS, log=print) -> dict:
    """Generate the small dataset (if missing), train ``moe-small``, evaluate, write the report.

    The demo stops after ``max_steps`` (default 400 of the config's 1000;
    ``pihc train --resume runs/demo`` continues to the end, exactly as an
    uninterrupted run would).  An existing finished run in ``out`` is
    re-evaluated; an unfinished one is resumed.  Nothing in ``out`` is deleted.
    """
    from .evaluation import evaluate
    from .report import write_report
    from .trainer import CHECKPOINT, train

    out = Path(out)
    cfg = load_config(DEMO_CONFIG)
    t0 = time.perf_counter()
    if (out / CHECKPOINT).exists():
        saved = load_config(out / "config.yaml")
        meta = read_checkpoint_meta(out / CHECKPOINT)
        if meta["step"] < saved.optim.steps and (max_steps is None or meta["step"] < max_steps):
            log(f"{out} holds an unfinished run (step {meta['step']}); resuming it")
            train(saved, out, resume=True, max_steps=None if max_steps is None else max_steps - meta["step"])
        else:
            log(f"{out} already holds a trained run (step {meta['step']}); evaluating it")
    else:
        train(cfg, out, max_steps=max_steps)
    t_train = time.perf_counter() - t0
    res = evaluate(out)
    report = write_report(out)
    summary = {"run": str(out), "report": str(report), "rel_l2_mean": res["rel_l2_mean"],
               "rel_l2_std": res["rel_l2_std"], "train_and_data_s": round(t_train, 1)}
    log(json.dumps(summary, indent=2))
    return summary

