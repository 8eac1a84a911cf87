"""A run report: ``report.md`` beside the metrics and plots of a run directory."""

from __future__ import annotations

import json
from pathlib import Path

from .io import MetricsLog, atomic_write_text


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(run_dir: str | Path) -> Path:
    """Summarise config, training and evaluation of ``run_dir`` in ``report.md``."""
    run_dir = Path(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    ev_path = run_dir / "evaluation.json"
    ev = json.loads(ev_path.read_text()) if ev_path.exists() else None
    tr_path = run_dir / "evaluation-train.json"  # `pihc evaluate --split train`
    tr = json.loads(tr_path.read_text()) if tr_path.exists() else None
    metrics = MetricsLog(run_dir / "metrics.jsonl").read()
    cfg = run["config"]
    lines = [f"# pihc run report: `{run_dir.name}`", "",
             f"pihc {run['pihc_version']}, JAX {run['jax_version']}, seed {run['seed']}, data `{run['data']}`"
             f" ({run['train_samples']} train / {run['test_samples']} test samples).", "",
             f"Problem: `{cfg['problem']}`" + (f" with {cfg['problem_options']}" if cfg.get("problem_options") else "")
             + ".", "",
             "## Model", "",
             f"- method: **{cfg['model']['method']}**, FNO width {cfg['model']['width']},"
             f" {cfg['model']['layers']} layers, modes {cfg['model']['modes']},"
             f" {cfg['model']['n_basis']} basis functions",
             (f"- grid (t, x): {cfg['data']['nt']} x {cfg['data']['nx']}" if cfg['data'].get('ny') is None else
              f"- grid (t, x, y): {cfg['data']['nt']} x {cfg['data']['nx']} x {cfg['data']['ny']}")]
    if cfg["model"]["method"] != "sc":
        c = cfg["constraint"]
        slabs = c.get("time_slabs", 1)
        lines.append(f"- constraint: splits {c['splits'] if cfg['model']['method'] == 'moe' else 'global'},"
                     + (f" in {slabs} time slabs solved in turn," if slabs > 1 else "")
                     + f" {c['n_points']} points per expert, rows {c['row_scope']}, LM max"
                     f" {c['solver']['max_steps']} steps, rtol {c['solver']['rtol']}")
    lines += ["", "## Training", ""]
    stopped = [m for m in metrics if m.get("stopped")]
    metrics = [m for m in metrics if not m.get("stopped")]
    if stopped:
        lines += [f"- **stopped at step {stopped[-1]['step']}: {stopped[-1]['stopped']}**"]
    if metrics:
        last = metrics[-1]
        total = sum(m["step_time_s"] for m in metrics)
        steady = [m["step_time_s"] for m in metrics[1:]] or [metrics[0]["step_time_s"]]
        failed = sum(m.get("failed_solves", 0) for m in metrics)
        planned = cfg["optim"]["steps"]
        if last["step"] < planned:
            lines += [f"- **stopped at step {last['step']} of the configured {planned}** (continue with"
                      f" `pihc train --resume {run_dir}`)"]
        lines += [f"- steps: {last['step']}, wall time {total:.1f} s (median step"
                  f" {sorted(steady)[len(steady) // 2]:.3f} s, first step incl. compilation"
                  f" {metrics[0]['step_time_s']:.1f} s)",
                  f"- final loss {last['loss']:.4g} (PDE {last['pde']:.3g}, initial {last['initial']:.3g},"
                  f" boundary {last['boundary']:.3g}; unweighted mean squares)",
                  f"- samples with a failed solve, summed over steps: {failed}; steps skipped because"
                  f" every solve failed: {sum(m.get('skipped_update', 0) for m in metrics)}"]
        held = [m for m in metrics if "heldout_rel_l2" in m]
        if held:
            lines += [f"- held-out relative L2 error during training (first {cfg['run'].get('eval_samples', '?')}"
                      f" held-out samples): {100 * held[0]['heldout_rel_l2']:.2f}% at step {held[0]['step']},"
                      f" {100 * held[-1]['heldout_rel_l2']:.2f}% at step {held[-1]['step']}"]
        if (run_dir / "plots" / "loss.png").exists():
            lines += ["", "![loss](plots/loss.png)"]
    if ev is not None:
        lines += ["", "## Evaluation", "",
                  f"On {ev['samples']} held-out samples of `{ev['data']}` at step {ev['step']}:", "",
                  "| metric | value |", "|---|---|",
                  f"| relative L2 error (mean +- std) | {100 * ev['rel_l2_mean']:.2f}%"
                  f" +- {100 * ev['rel_l2_std']:.2f}% |",
                  f"| relative L2 error (median / max) | {100 * ev['rel_l2_median']:.2f}%"
                  f" / {100 * ev['rel_l2_max']:.2f}% |",
                  *([f"| relative L2 error for {ev['window']['t_from']:g} < t <= {ev['window']['t_to']:g}"
                      f" ({ev['window']['times']} times; trained on t <= {ev['window']['trained_until']:g}) |"
                      f" {100 * ev['window']['rel_l2_mean']:.2f}% +- {100 * ev['window']['rel_l2_std']:.2f}% |"]
                    if ev.get("window") and ev["window"].get("trained_until") is not None else
                    [f"| relative L2 error for {ev['window']['t_from']:g} < t <= {ev['window']['t_to']:g} |"
                     f" {100 * ev['window']['rel_l2_mean']:.2f}% +- {100 * ev['window']['rel_l2_std']:.2f}% |"]
                    if ev.get("window") else []),
                  *([f"| on {tr['samples']} of its training trajectories (mean +- std) |"
                      f" {100 * tr['rel_l2_mean']:.2f}% +- {100 * tr['rel_l2_std']:.2f}% |"]
                    if tr is not None and tr.get("step") == ev["step"] else []),
                  *([f"| persistence baseline u(t) = u0 (mean +- std) | {100 * ev['persistence']['rel_l2_mean']:.2f}%"
                      f" +- {100 * ev['persistence']['rel_l2_std']:.2f}% |"] if "persistence" in ev else []),
                  f"| mean squared PDE residual | {ev['residual']['pde']:.3g} |",
                  *([f"| mean squared PDE residual of the numerical solution | {ev['residual_of_truth']['pde']:.3g} |"]
                    if "residual_of_truth" in ev else []),
                  f"| mean squared initial / boundary rows | {ev['residual']['initial']:.3g}"
                  f" / {ev['residual']['boundary']:.3g} |",
                  f"| inference s/sample | {ev['timing']['inference_s_per_sample']:.4f} |"]
        if "numerical_solver_s_per_sample" in ev["timing"]:
            lines.append("| numerical solver s/sample (as generated, output"
                         f" {ev['timing']['numerical_solver_output_grid']}) |"
                         f" {ev['timing']['numerical_solver_s_per_sample']:.4f} |")
        s = ev["seams"]
        if s.get("mean_abs_residual_near_seams") is not None and s.get("mean_abs_residual_interior") is not None:
            lines.append(f"| mean abs residual within {s['width']} points of expert seams / elsewhere |"
                         f" {s['mean_abs_residual_near_seams']:.3g} / {s['mean_abs_residual_interior']:.3g} |")
        if "experts" in ev:
            e = ev["experts"]
            lines += ["", "| expert | constraint residual norm | LM steps (mean / max) | failed |",
                      "|---|---|---|---|"]
            for k, r in enumerate(e["residual_norm_mean"]):
                lines.append(f"| {k} | {r:.3g} | {e['solver_steps_mean'][k]:.1f} / {e['solver_steps_max'][k]}"
                             f" | {e['failed_solves'][k]} |")
            if len(e["residual_norm_mean"]) > 1 and "weights_spread_rel" in e:
                lines += ["", f"The experts' weights differ from their mean by {100 * e['weights_spread_rel']:.2f}%"
                              " of its norm (0%: every expert picked the same weights, i.e. one global fit)."]
        for name in ("samples", "snapshots", "error_over_time", "residual"):
            if (run_dir / "plots" / f"{name}.png").exists():
                lines += ["", f"![{name}](plots/{name}.png)"]
    out = run_dir / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
