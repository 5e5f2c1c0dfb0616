#!/usr/bin/env bash
# Batch-1 decode of two builds of `lab`, side by side in one call on the GPU machine: A B A B on
# each shape (random weights written once under /tmp/m), ms/token and the device's ms/token.
#
#   scripts/gpu-ab.sh gpu-bin/lab-prev gpu-bin/lab     # e.g. the previous commit's build, this one
#
# How each "previous code in the same run" figure of book/src/performance.md was measured.
set -u
A=${1:?usage: gpu-ab.sh LAB_A LAB_B}; B=${2:?usage: gpu-ab.sh LAB_A LAB_B}
M=${MODELS:-/tmp/m}
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for s in smollm2-135m llama-3.2-1b; do
    [[ -f $M/$s/config.json ]] || "$B" save-model --model engine/configs/$s.json --random-weights --out $M/$s >/dev/null
done
echo "| run | build | shape | ms/token | device ms/token | copy GB/s |"
echo "| --- | --- | --- | ---: | ---: | ---: |"
for r in 1 2; do for L in "$A" "$B"; do for s in smollm2-135m llama-3.2-1b; do
    j=$("$L" bench --device cuda --model $M/$s --workload decode-b1 --json 2>/dev/null | grep '^{' | tail -1)
    echo "$j" | python3 -c '
import json, sys
r = json.load(sys.stdin)
ms, dev = r["decode_b1_ms_per_token"], r.get("decode_b1_device_ms_per_token", float("nan"))
print("| %s | %s | %s | %.4f | %.4f | %.0f |" % (*sys.argv[1:4], ms, dev, r["ceilings"]["copy_gb_s"]))
' "$r" "$L" "$s" 2>/dev/null || echo "| $r | $L | $s | failed | | |"
done; done; done
