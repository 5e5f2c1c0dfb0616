#!/usr/bin/env bash
# One build of `lab`, several settings of its environment knobs (LAB_GEMV_*,
# LAB_DECODE_ATTENTION, ...), side by side in one call on the GPU machine: each round runs every
# setting once, in order, so that drift of the machine shows as a difference between rounds,
# not between settings.
#
#   SETTINGS="default unstaged:LAB_GEMV_STAGED=0 below4:LAB_GEMV_SPLIT_BELOW=4" \
#   CASES="7b:32:2 1b:1:1" scripts/gpu-env-ab.sh gpu-bin/lab
#
# SETTINGS: NAME[:VAR=VALUE,VAR=VALUE...] each (a bare NAME runs the defaults); an item that
# starts with -- is a flag for `lab bench` instead (e.g. `sync:--no-async-scheduling`: on one GPU
# the default has been async scheduling since 2026-12-02; the 7b cases' decode-step report is
# synchronous unless given `--async-scheduling`).
# CASES: MODEL:BATCH:TP, MODEL one of 7b (Llama-2-7B shape, `--workload decode`: the decode step
# at BATCH, each run 40-50 s), 1b / 135m (`--workload decode-b1`, batch-1 decode; BATCH must be
# 1; the weights are written once under $MODELS, default /tmp/m), or nano1b / nano135m
# (nano-vllm's workload, one run, then batch-1 decode on the same engine). ROUNDS (default 2).
# Prints one table row per run: wall and device ms (per step for 7b, per token for b1); for the
# nano cases output tok/s and the batch-1 decode's wall ms a token.
set -u
L=${1:?usage: gpu-env-ab.sh LAB}
M=${MODELS:-/tmp/m}
export NCCL_NVLS_ENABLE=0 # NVLink SHARP is not available to our containers (docs/gpu.md)
date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
echo "| round | case | setting | ms wall | ms device | copy GB/s |"
echo "| --- | --- | --- | ---: | ---: | ---: |"
for r in $(seq "${ROUNDS:-2}"); do
    for c in ${CASES:-7b:32:2}; do
        IFS=: read -r model b tp <<<"$c"
        for s in ${SETTINGS:-default}; do
            name=${s%%:*}
            items=() vars=() flags=()
            [[ $s == *:* ]] && IFS=, read -r -a items <<<"${s#*:}"
            for i in "${items[@]}"; do
                if [[ $i == --* ]]; then flags+=("$i"); else vars+=("$i"); fi
            done
            cfg=llama-3.2-1b
            [[ $model == *135m ]] && cfg=smollm2-135m
            if [[ $model == 7b ]]; then
                args=(bench --workload decode --runs "${RUNS:-3}" --json --device cuda
                    --model engine/configs/llama-2-7b.json --random-weights --batch-size "$b" --tp "$tp")
                keys='"ms_per_step", "device_ms_per_step"'
            else
                [[ -f $M/$cfg/config.json ]] || "$L" save-model --model engine/configs/$cfg.json \
                    --random-weights --out "$M/$cfg" >/dev/null
                if [[ $model == nano* ]]; then
                    args=(bench --workload nano-vllm --max-num-seqs 256 --max-num-batched-tokens 16384
                        --runs 1 --json --device cuda --model "$M/$cfg" --tp "$tp")
                    keys='"output_tok_per_s", "decode_b1_ms_per_token"'
                else
                    args=(bench --workload decode-b1 --json --device cuda --model "$M/$cfg" --tp "$tp")
                    keys='"decode_b1_ms_per_token", "decode_b1_device_ms_per_token"'
                fi
            fi
            j=$(env "${vars[@]}" timeout 200 "$L" "${args[@]}" "${flags[@]}" 2>"/tmp/env-ab-$name.err" | grep '^{' | tail -1)
            echo "$j" | python3 -c "
import json, sys
r = json.load(sys.stdin)
wall, dev = ($keys)
print('| %s | %s | %s | %.4f | %.4f | %.0f |' % (*sys.argv[1:4], r[wall], r.get(dev, float('nan')),
      r.get('ceilings', {}).get('copy_gb_s', float('nan'))))
" "$r" "$c" "$name" 2>/dev/null || echo "| $r | $c | $name | failed: $(tail -1 "/tmp/env-ab-$name.err") | | |"
        done
    done
done
