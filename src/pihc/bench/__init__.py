"""Benchmarks reachable from the CLI (``pihc bench NAME``); the scripts live in ``benchmarks/``."""

from __future__ import annotations

import importlib

_BENCHMARKS = {
    "constraint": "pihc.bench.constraint_scaling",
    "constraint-ablation": "pihc.bench.constraint_ablation",
    "step-cost": "pihc.bench.step_cost",
    "step-profile": "pihc.bench.step_profile",
    "accuracy": "pihc.bench.accuracy",
    "generator": "pihc.bench.generator_speed",
}


def run_benchmark(name: str, argv: list[str]):
    if name not in _BENCHMARKS:
        raise SystemExit(f"error: unknown benchmark {name!r}; choose from {sorted(_BENCHMARKS)}")
    return importlib.import_module(_BENCHMARKS[name]).main(argv)
