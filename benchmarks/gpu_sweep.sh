#!/usr/bin/env bash
# Train several variants of the full diffusion-sorption configs side by side
# on one GPU, evaluate each on its held-out samples, and pack the light
# results (config, metrics.jsonl, evaluation.json, logs; no checkpoints or
# plots) into $OUT/sweep.tar.gz, refreshed every 30 s.
#
#   OUT=dir bash benchmarks/gpu_sweep.sh VARIANTS_FILE
#
# VARIANTS_FILE: one variant per line, "NAME CONFIG [--set key=value ...]
# [--max-steps N]"; '#' starts a comment.  Generates the 9000-sample
# 1024 x 101 dataset first if it is missing (scipy BDF on the host's cores).
set -u
OUT=${OUT:-runs/sweep-out}
PY=${PY:-python3}
ROOT=${ROOT:-runs/sweep}
mkdir -p "$OUT" "$ROOT" data
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

pack() {
    tar -C "$(dirname "$ROOT")" -czf "$OUT/sweep.tar.gz.tmp" --exclude='checkpoint*' --exclude='plots' \
        --exclude='*.tmp*' "$(basename "$ROOT")" 2>/dev/null && mv "$OUT/sweep.tar.gz.tmp" "$OUT/sweep.tar.gz"
}
( while true; do sleep 30; pack; done ) &
PACKER=$!
trap 'kill $PACKER 2>/dev/null; pack' EXIT

data=data/diffusion-sorption-1024x101.h5
[ -f "$data" ] || /usr/bin/time -f "generate: %e s" $PY -m pihc.cli generate diffusion-sorption --samples 9000 \
    --nx 1024 --nt 101 --seed 0 --ic pdebench --batch 4 --out "$data" --quiet

n=$(grep -cv '^\s*\(#\|$\)' "$1")
export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / max($n, 1), 3))")
names=()
while read -r name config rest; do
    case "$name" in ''|\#*) continue;; esac
    names+=("$name")
    # shellcheck disable=SC2086
    ( $PY -m pihc.cli train --config "$config" --out "$ROOT/$name" --quiet $rest \
        && $PY -m pihc.cli evaluate "$ROOT/$name" ) > "$ROOT/$name.log" 2>&1 &
done < "$1"
wait
for name in "${names[@]}"; do
    $PY - "$ROOT/$name" <<'PYEOF'
import json, sys
d = sys.argv[1]
try:
    e = json.load(open(f"{d}/evaluation.json"))
    print(d, "rel_l2", round(100 * e["rel_l2_mean"], 2), "+-", round(100 * e["rel_l2_std"], 2))
except Exception as ex:  # report and go on: the other variants still count
    print(d, "no evaluation:", ex)
PYEOF
done
