"""``make demo`` / ``pihc demo``: data, training, evaluation and report on a small problem."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import load_config
from .io import CHECKPOINT, read_checkpoint_meta

DEMO_CONFIG = "diffusion-sorption/moe-small"
# A complete run on a shortened schedule: moe-small's 1000 steps with Adam
# halved every 200 become 500 steps halved every 100 (~4 min on 2 cores), so
# `make demo` fits in 10 minutes with its set-up and reports a finished run.
DEMO_STEPS = 500


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = DEMO_STEPS, log=print) -> dict:
    """Generate the small dataset (if missing), train ``moe-small``, evaluate, write the report.

    The demo trains ``moe-small`` for ``max_steps`` steps (default 500), with
    the learning-rate schedule compressed to match (``optim.decay_every =
    max_steps // 5``), so the run it reports is finished.  ``max_steps=None``
    trains the config as it is.  An existing finished run in ``out`` is
    re-evaluated; an unfinished one is resumed.  Nothing in ``out`` is deleted.
    """
    from .evaluation import evaluate
    from .loop import train
    from .report import write_report

    out = Path(out)
    overrides = [] if max_steps is None else [f"optim.steps={max_steps}",
                                              f"optim.decay_every={max(max_steps // 5, 1)}"]
    cfg = load_config(DEMO_CONFIG, overrides)
    t0 = time.perf_counter()
    if (out / CHECKPOINT).exists():
        saved = load_config(out / "config.yaml")
        meta = read_checkpoint_meta(out / CHECKPOINT)
        if meta["step"] < saved.optim.steps:
            log(f"{out} holds an unfinished run (step {meta['step']}); resuming it")
            train(saved, out, resume=True)
        else:
            log(f"{out} already holds a trained run (step {meta['step']}); evaluating it")
    else:
        train(cfg, out)
    t_train = time.perf_counter() - t0
    res = evaluate(out)
    report = write_report(out)
    summary = {"run": str(out), "report": str(report), "rel_l2_mean": res["rel_l2_mean"],
               "rel_l2_std": res["rel_l2_std"], "train_and_data_s": round(t_train, 1)}
    log(json.dumps(summary, indent=2))
    return summary

