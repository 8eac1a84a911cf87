#!/usr/bin/env bash
# Train and evaluate the three full (paper-size) diffusion-sorption configs on
# one GPU, then time a training step with the trained parameters.
#
#   OUT=somewhere bash benchmarks/full_configs_gpu.sh
#
# The training and evaluation are benchmarks/gpu_sweep.sh over
# benchmarks/sweeps/full_configs.txt (dataset generated when missing, the
# runs side by side on the one GPU, light results in $OUT/summary.json and
# $OUT/runs.tar.gz).  The runs land in runs/full/; the step timing in
# $OUT/step_cost_full_trained_gpu.json.
set -u
OUT=${OUT:-runs/full-out}
PY=${PY:-python3}
mkdir -p "$OUT"
ROOT=runs/full OUT=$OUT PY=$PY bash "$(dirname "$0")/gpu_sweep.sh" "$(dirname "$0")/sweeps/full_configs.txt"
PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} $PY benchmarks/step_cost.py --config diffusion-sorption/moe-paper \
    --repeats 5 --trained hc=runs/full/hc --trained moe=runs/full/moe --out "$OUT/step_cost_full_trained_gpu.json"
