#!/usr/bin/env bash
# The Llama-2-7B-shape decode step (random weights) of two builds of `lab`, side by side in one
# call on a machine with two GPUs: for each case in CASES, build A then build B, each
# `lab bench --workload decode` (median of RUNS windows of 128 steps after 128-token prompts).
#
#   scripts/gpu-ab-tp.sh gpu-bin/lab-prev gpu-bin/lab
#
# CASES (default "32:1 32:2 32:2:nccl"): BATCH:TP[:nccl|:custom], nccl = --custom-all-reduce
# off, custom = --custom-all-reduce on (the default since 2026-11-29's evening; before, off).
# Each run takes about 40-50 s (making the random weights is most of it; loading the same
# weights written once by `lab save-model` took longer, about 53 s a run, on 2026-11-29).
# Prints one table row per run: wall and device ms/step, and the TP 1 / TP N speed-up of each
# build against its own TP 1 run of the same batch when that ran first.
set -u
A=${1:?usage: gpu-ab-tp.sh LAB_A LAB_B}; B=${2:?usage: gpu-ab-tp.sh LAB_A LAB_B}
export NCCL_NVLS_ENABLE=0 # NVLink SHARP is not available to our containers (docs/gpu.md)
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
echo "| case | build | ms/step wall | ms/step device | TP 1 wall / this wall |"
echo "| --- | --- | ---: | ---: | ---: |"
declare -A tp1
for c in ${CASES:-32:1 32:2 32:2:nccl}; do
    IFS=: read -r b tp extra <<<"$c"
    args=(--batch-size "$b" --tp "$tp")
    [[ $extra == nccl ]] && args+=(--custom-all-reduce off)
    [[ $extra == custom ]] && args+=(--custom-all-reduce on)
    for L in "$A" "$B"; do
        j=$(timeout 200 "$L" bench --workload decode --runs "${RUNS:-3}" --json --device cuda \
            --model engine/configs/llama-2-7b.json --random-weights "${args[@]}" 2>/dev/null | grep '^{' | tail -1)
        row=$(echo "$j" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.3f %.3f" % (r["ms_per_step"], r.get("device_ms_per_step", float("nan"))))' 2>/dev/null) || row=""
        if [[ -z $row ]]; then
            echo "| $c | $L | failed | | |"
            continue
        fi
        read -r wall dev <<<"$row"
        [[ $tp == 1 ]] && tp1["$L:$b"]=$wall
        ratio=$(python3 -c "import sys; a, w = sys.argv[1:]; print(f'{float(a) / float(w):.2f}x' if a else '')" "${tp1["$L:$b"]:-}" "$wall")
        echo "| $c | $L | $wall | $dev | $ratio |"
    done
done
