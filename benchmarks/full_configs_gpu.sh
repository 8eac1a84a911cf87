#!/usr/bin/env bash
# Train and evaluate the three full (paper-size) diffusion-sorption configs on
# one GPU: generate the 9000-sample 1024 x 101 dataset (scipy BDF on the host's
# cores), train sc / hc / moe side by side on the one GPU, evaluate each on the
# 1000 held-out samples, then time a training step with the trained parameters.
#
#   OUT=somewhere bash benchmarks/full_configs_gpu.sh
#
# Everything lands in runs/full/ and, packed as $OUT/full_runs.tar (refreshed
# every 30 s, so a run cut short still leaves its latest checkpoints), in $OUT.
# Needs: python3 with jax (CUDA), equinox, optax, optimistix, lineax, h5py,
# matplotlib, pyyaml, tqdm; pihc from this checkout (PYTHONPATH=src).
set -u
OUT=${OUT:-runs/full-out}
mkdir -p "$OUT" runs/full data
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
STEPS=${STEPS:-}            # empty: the configs' own 4000 steps
METHODS=${METHODS:-"sc hc moe"}

sync_out() {
    tar -C runs -cf "$OUT/full_runs.tar.tmp" --exclude='*.tmp*' full 2>/dev/null \
        && mv "$OUT/full_runs.tar.tmp" "$OUT/full_runs.tar"
}
( while true; do sleep 30; sync_out; done ) &
SYNC=$!
trap 'kill $SYNC 2>/dev/null; sync_out' EXIT

data=data/diffusion-sorption-1024x101.h5
if [ ! -f "$data" ]; then
    /usr/bin/time -f "generate: %e s" $PY -m pihc.cli generate diffusion-sorption --samples 9000 --nx 1024 \
        --nt 101 --seed 0 --ic pdebench --batch 4 --out "$data" --quiet 2>&1 | tee runs/full/generate.log
fi

# Three processes share the GPU; each may take a quarter of its memory.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.22
pids=()
for m in $METHODS; do
    if [ -f "runs/full/$m/checkpoint.eqx" ] || [ -d "runs/full/$m/checkpoint" ]; then
        cmd=(train --resume "runs/full/$m" --quiet)
    else
        cmd=(train --config "diffusion-sorption/$m" --out "runs/full/$m" --quiet)
    fi
    [ -n "$STEPS" ] && cmd+=(--max-steps "$STEPS")
    $PY -m pihc.cli "${cmd[@]}" > "runs/full/$m.train.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for m in $METHODS; do tail -3 "runs/full/$m.train.log"; done

pids=()
for m in $METHODS; do
    $PY -m pihc.cli evaluate "runs/full/$m" > "runs/full/$m.eval.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for m in $METHODS; do
    $PY - "$m" <<'EOF'
import json, sys
m = sys.argv[1]
e = json.load(open(f"runs/full/{m}/evaluation.json"))
print(m, {k: e[k] for k in ("rel_l2_mean", "rel_l2_std") if k in e})
EOF
done

unset XLA_PYTHON_CLIENT_MEM_FRACTION
$PY benchmarks/step_cost.py --config diffusion-sorption/moe --repeats 5 \
    --trained hc=runs/full/hc --trained moe=runs/full/moe --out runs/full/step_cost_full_trained_gpu.json
