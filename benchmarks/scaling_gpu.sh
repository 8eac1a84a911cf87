#!/usr/bin/env bash
# The sharded path on one real device: the training step unsharded (mesh None) against the same step
# on a 1 x 1 mesh (shard_map over the expert axis, jit with named shardings), timed alternately.
# Prints the JSON and writes it to $OUT/scaling_gpu.json; stopped after 115 s (two compilations and 20 timed steps).
#
#   OUT=dir bash benchmarks/scaling_gpu.sh
set -eu
OUT=${OUT:-runs/scaling-gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# The paper's diffusion-sorption grid (101 x 1024) with 8 experts of 4,000 points, batch 6.
timeout 115 $PY benchmarks/scaling.py --one-device --grid 101 1024 --points 4000 --batch 6 --repeats 10 \
    --out "$OUT/scaling_gpu.json"
