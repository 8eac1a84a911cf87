"""``make demo`` / ``pihc demo``: data, training, evaluation and report on a small problem."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import load_config
from .io import CHECKPOINT, read_checkpoint_meta

DEMO_CONFIG = "diffusion-sorption/demo"
# The demo trains its config's own schedule (1000 steps, Adam halved every
# 200): on its 51 x 128 grid that is a finished run in a few minutes on 2
# cores, data generation included.  ``max_steps`` shortens or lengthens it,
# with the schedule scaled to match.
DEMO_STEPS: int | None = None


def run_demo(out: str | Path = "runs/demo", max_steps: int | None = DEMO_STEPS, log=print) -> dict:
    """Generate the small dataset (if missing), train the demo config, evaluate, write the report.

    The demo trains ``DEMO_CONFIG`` (PI-HC-MoE with blended experts, as
    ``moe-small``, on 51 x 128) for its configured steps.  ``max_steps``
    trains that many steps instead, with the learning-rate schedule scaled
    to match (``optim.decay_every`` in the same proportion), so the run it
    reports is finished.  An existing finished run in ``out`` is
    re-evaluated; an unfinished one is resumed.  Nothing in ``out`` is
    deleted.
    """
    from .evaluation import evaluate
    from .loop import train
    from .report import write_report

    out = Path(out)
    cfg = load_config(DEMO_CONFIG)
    if max_steps is not None and max_steps != cfg.optim.steps:
        decay = max(round(cfg.optim.decay_every * max_steps / cfg.optim.steps), 1)
        cfg = load_config(DEMO_CONFIG, [f"optim.steps={max_steps}", f"optim.decay_every={decay}"])
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

