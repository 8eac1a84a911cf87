#!/usr/bin/env bash
# The paper-size Navier-Stokes configs (64 x 64 x 64, FNO width 64, 8 layers, N = 64) on one GPU:
#   1. the peak device memory of one training step of PI-SC, PI-HC and PI-HC-MoE at the paper's
#      batch (4), each method in its own process (benchmarks/step_memory.py: device_peak_gb);
#   2. the step time of the three side by side, interleaved repeats (benchmarks/step_cost.py).
# The data are 8 trajectories generated on first use (data/ns-gpu-check.h5). Each part is cut off
# after its time limit; what finished is in $OUT.
#
#   OUT=dir bash benchmarks/ns_gpu_check.sh                     # on the GPU machine
#   OUT=dir bash benchmarks/ns_gpu_check.sh --set model.width=8 --set model.layers=1 ...   # a quick check
#
# Extra arguments (--set KEY=VALUE ...) go to both scripts.
set -u
OUT=${OUT:-runs/ns-gpu-check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: not a GPU machine"
DATA=(--set data.path=data/ns-gpu-check.h5 --set data.generate.samples=8 --set data.train_samples=4
      --set data.test_samples=4)
timeout "${MEMORY_LIMIT_S:-240}" $PY benchmarks/step_memory.py --config navier-stokes/moe --batch 4 "${DATA[@]}" \
    "$@" --out "$OUT/ns_step_memory_gpu.json"
echo "step_memory: exit $?"
timeout "${COST_LIMIT_S:-240}" $PY benchmarks/step_cost.py --config navier-stokes/moe --repeats 5 "${DATA[@]}" \
    "$@" --out "$OUT/ns_step_cost_paper_gpu.json"
echo "step_cost: exit $?"
