#!/usr/bin/env bash
# Train several variants of a config side by side on one GPU to their last
# step, then evaluate each: benchmarks/gpu_runs.py without a deadline (the
# dataset of the first variant's config generated when missing; light
# results in $OUT/summary.json and $OUT/runs.tar.gz, refreshed every 30 s;
# a second call resumes or evaluates what the first left).
#
#   OUT=dir bash benchmarks/gpu_sweep.sh VARIANTS_FILE
#
# VARIANTS_FILE: one variant per line, "NAME CONFIG [--set key=value ...]
# [--max-steps N]"; '#' starts a comment.
set -eu
OUT=${OUT:-runs/sweep-out}
PY=${PY:-python3}
ROOT=${ROOT:-runs/sweep}
exec $PY "$(dirname "$0")/gpu_runs.py" "$1" --root "$ROOT" --out "$OUT" --deadline inf
