#!/usr/bin/env bash
# The engine against transformers on the GPU machine, for random-weight models of real shapes,
# with the ceilings lab measures in the same run; a markdown table printed last.
#
#   scripts/gpu-check.sh build        # here (has cargo): puts gpu-bin/lab (and the tests) in place
#   scripts/gpu-bench.sh [options]    # there (no cargo; python3 with torch + transformers)
#
# For each shape (engine/configs/SHAPE.json):
#   1. gpu-bin/lab save-model --model engine/configs/SHAPE.json --random-weights --out DIR
#      (DIR under --models; reused when it already holds config.json and model.safetensors)
#   2. gpu-bin/lab bench --device cuda --model DIR --workload nano-vllm --max-num-seqs 256 \
#        --max-num-batched-tokens 16384 [--limit N] --json     (then batch-1 decode, same engine)
#      and, when limited, the whole workload too (lab alone: seconds)
#   3. gpu-bin/lab bench --device cuda --model DIR --workload decode-b1 --json   (fresh engine)
#   4. python3 scripts/bench_transformers_gpu.py --model DIR [--limit N]   (then batch-1 decode)
#
# Options:
#   --shapes A,B         configs to run (default smollm2-135m,llama-3.2-1b)
#   --limit SHAPE=N      the first N requests of the nano-vllm workload, on both sides; N = all
#                        for every request (default: llama-3.2-1b=64; transformers needs ~200 s
#                        for all 256 of the 135M shape, ~6 min for all of the 1B shape)
#   --models DIR         where the model directories go (default /tmp/gpu-bench-models: not
#                        under $OUT, whose files come back to the caller)
#   --device DEV         lab's --device (default cuda; cpu for a smoke test without a GPU)
#   --args "ARGS"        more arguments for both benchmarks (e.g. "--num-requests 8 --runs 1")
#   --no-transformers    the engine only
#   --dry-run            print the commands, run nothing
# Environment: OUT (logs in $OUT/gpu-logs/bench, else ./gpu-logs/bench), LAB (default
# gpu-bin/lab), PYTHON (default python3).
#
# Logs: SHAPE.log (every step's output), results.jsonl (each run's JSON line, tagged with shape,
# side and run), table.md (the table printed last). Exit status: 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-bench: $*" >&2; exit 2; }

shapes="smollm2-135m,llama-3.2-1b"
declare -A limit=([llama-3.2-1b]=64)
models="/tmp/gpu-bench-models"
device="cuda"
extra=""
transformers=1
dry=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --shapes) [[ $# -ge 2 ]] || die "--shapes needs a value"; shapes="$2"; shift 2 ;;
        --limit)
            [[ $# -ge 2 && "$2" =~ ^([A-Za-z0-9._-]+)=([0-9]+|all)$ ]] \
                || die "--limit needs SHAPE=N (N a number or all), got '${2:-}'"
            limit[${BASH_REMATCH[1]}]="${BASH_REMATCH[2]}"
            shift 2 ;;
        --models) [[ $# -ge 2 ]] || die "--models needs a directory"; models="$2"; shift 2 ;;
        --device) [[ $# -ge 2 ]] || die "--device needs a value"; device="$2"; shift 2 ;;
        --args) [[ $# -ge 2 ]] || die "--args needs a value"; extra="$2"; shift 2 ;;
        --no-transformers) transformers=0; shift ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

LAB="${LAB:-gpu-bin/lab}"
PYTHON="${PYTHON:-python3}"
IFS=',' read -r -a shape_list <<<"$shapes"
[[ ${#shape_list[@]} -gt 0 ]] || die "--shapes is empty"
for s in "${shape_list[@]}"; do
    [[ -f "engine/configs/$s.json" ]] || die "no engine/configs/$s.json (shapes: $(ls engine/configs | sed 's/\.json$//' | tr '\n' ' '))"
done
for s in "${!limit[@]}"; do
    n="${limit[$s]}"
    [[ -f "engine/configs/$s.json" ]] || die "--limit $s=$n: no engine/configs/$s.json"
    [[ "$n" == all || "$n" -ge 1 ]] || die "--limit $s=$n: N must be at least 1"
done
if [[ $dry -eq 0 ]]; then
    [[ -x "$LAB" ]] || die "no $LAB: run 'scripts/gpu-check.sh build' where cargo is, and carry gpu-bin/"
    if [[ $transformers -eq 1 ]]; then
        "$PYTHON" -c 'import torch, transformers' 2>/dev/null \
            || die "$PYTHON cannot import torch and transformers (--no-transformers runs the engine alone)"
    fi
fi

LOGS="${OUT:+$OUT/}gpu-logs/bench"
RESULTS="$LOGS/results.jsonl"
status=0
failed=()
if [[ $dry -eq 0 ]]; then
    mkdir -p "$LOGS" "$models"
    : >"$RESULTS"
fi

# step SHAPE SIDE RUN CMD...: runs CMD, its output appended to SHAPE.log; its last stdout line
# that starts with '{' goes to results.jsonl, tagged. Returns CMD's status (0 in a dry run).
step() {
    local shape="$1" side="$2" run="$3"
    shift 3
    echo "+ $*"
    [[ $dry -eq 1 ]] && return 0
    local log="$LOGS/$shape.log" out
    out=$(mktemp)
    {
        echo "== $side $run: $* ($(date -u +%H:%M:%S))"
    } >>"$log"
    local start rc
    start=$(date +%s)
    "$@" >"$out" 2>>"$log"
    rc=$?
    cat "$out" >>"$log"
    echo "== $side $run: exit $rc after $(( $(date +%s) - start )) s" >>"$log"
    if [[ $rc -eq 0 && "$side" != setup ]]; then
        local json
        json=$(grep '^{' "$out" | tail -1)
        if [[ -n "$json" ]]; then
            printf '{"shape": "%s", "side": "%s", "run": "%s", "report": %s}\n' \
                "$shape" "$side" "$run" "$json" >>"$RESULTS"
        else
            echo "== $side $run: no JSON line on stdout" >>"$log"
            rc=1
        fi
    fi
    rm -f "$out"
    if [[ $rc -ne 0 ]]; then
        status=1
        local why
        why=$(grep -v '^== ' "$log" | tail -1)
        failed+=("$shape $side $run: exit $rc: ${why:-no output} (log: $log)")
        echo "  FAILED (exit $rc): ${why:-no output}"
    fi
    return $rc
}

if [[ $dry -eq 0 ]]; then
    {
        date -u +"%Y-%m-%d %H:%M UTC"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
            || echo "no nvidia-smi"
    } >"$LOGS/machine.txt"
fi

for shape in "${shape_list[@]}"; do
    dir="$models/$shape"
    n="${limit[$shape]:-all}"
    lim=()
    [[ "$n" != all ]] && lim=(--limit "$n")
    # shellcheck disable=SC2206  # --args is split into words on purpose
    more=($extra)
    [[ $dry -eq 0 ]] && : >"$LOGS/$shape.log"
    echo "## $shape (nano-vllm workload: ${lim[*]:-all requests} ${more[*]})"
    if [[ $dry -eq 0 && -f "$dir/config.json" && -f "$dir/model.safetensors" ]]; then
        echo "  reusing $dir"
    else
        [[ $dry -eq 0 ]] && rm -rf "$dir" # a half-written one from a stopped run
        step "$shape" setup save-model "$LAB" save-model --model "engine/configs/$shape.json" \
            --random-weights --out "$dir" || continue
    fi
    step "$shape" lab nano-vllm "$LAB" bench --device "$device" --model "$dir" \
        --workload nano-vllm --max-num-seqs 256 --max-num-batched-tokens 16384 \
        "${lim[@]}" "${more[@]}" --json
    if [[ ${#lim[@]} -gt 0 ]]; then # the whole workload too: seconds for lab
        step "$shape" lab nano-vllm-all "$LAB" bench --device "$device" --model "$dir" \
            --workload nano-vllm --max-num-seqs 256 --max-num-batched-tokens 16384 \
            "${more[@]}" --json
    fi
    step "$shape" lab decode-b1 "$LAB" bench --device "$device" --model "$dir" \
        --workload decode-b1 "${more[@]}" --json
    if [[ $transformers -eq 1 ]]; then
        step "$shape" transformers nano-vllm env PYTHONUNBUFFERED=1 "$PYTHON" \
            scripts/bench_transformers_gpu.py --model "$dir" "${lim[@]}" "${more[@]}"
    fi
done

[[ $dry -eq 1 ]] && exit 0

"$PYTHON" - "$RESULTS" "$LOGS/machine.txt" >"$LOGS/table.md" <<'EOF'
import json, sys

runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["shape"], r["side"], r["run"])] = r["report"]
shapes = list(dict.fromkeys(s for s, _, _ in runs))

def num(v, digits):
    return "—" if v is None else f"{v:,.{digits}f}"

print(f"## lab vs transformers ({' '.join(open(sys.argv[2]).read().split())})")
print()
print("| shape | workload | lab | transformers | lab/transformers |")
print("| --- | --- | ---: | ---: | ---: |")
for s in shapes:
    lab = runs.get((s, "lab", "nano-vllm"), {})
    b1 = runs.get((s, "lab", "decode-b1"), {})
    tf = runs.get((s, "transformers", "nano-vllm"), {})
    reqs = lab.get("requests", tf.get("requests", "?"))
    rows = [
        (f"nano-vllm, {reqs} requests: output tok/s", "output_tok_per_s", lab, tf, 0),
        ("nano-vllm: total tok/s", "total_tok_per_s", lab, tf, 0),
        ("nano-vllm: TTFT p50 ms (lower is better)", "ttft_ms_p50", lab, tf, 1),
        ("nano-vllm: TPOT p50 ms (lower is better)", "tpot_ms_p50", lab, tf, 2),
        ("batch-1 decode ms/token (lower is better)", "decode_b1_ms_per_token", b1, tf, 3),
    ]
    for name, key, a, b, d in rows:
        x, y = a.get(key), b.get(key)
        ratio = f"{x / y:.2f}" if x is not None and y else "—"
        print(f"| {s} | {name} | {num(x, d)} | {num(y, d)} | {ratio} |")
    if "decode_b1_gb_s" in b1:
        print(f"| {s} | batch-1 decode: GB/s read (of copy) | {b1['decode_b1_gb_s']:,.0f} "
              f"({100 * b1['decode_b1_of_copy']:.0f}%) | — | — |")
    whole = runs.get((s, "lab", "nano-vllm-all"))
    for label, r in ((f"nano-vllm, {reqs} requests", lab), (f"nano-vllm, all {whole and whole['requests']} requests", whole)):
        if r is None:
            continue
        if r is whole:
            print(f"| {s} | {label}: output tok/s (lab alone) | {r['output_tok_per_s']:,.0f} | — | — |")
            print(f"| {s} | {label}: total tok/s (lab alone) | {r['total_tok_per_s']:,.0f} | — | — |")
        if "linear_tflop_s" in r:
            print(f"| {s} | {label}: linear layers TFLOP/s (of GEMM) | {r['linear_tflop_s']:,.1f} "
                  f"({100 * r['linear_of_gemm']:.1f}%) | — | — |")
            print(f"| {s} | {label}: decode attention KV GB/s over the run (of copy) | "
                  f"{r['decode_kv_gb_s']:,.0f} ({100 * r['decode_kv_of_copy']:.1f}%) | — | — |")

print()
print("Ceilings lab measured before each run (1 GiB device-to-device copy, read + write; "
      "8192³ bf16 GEMM through cuBLAS):")
print()
measured = [(s, run, r["ceilings"]) for (s, side, run), r in runs.items()
            if side == "lab" and r.get("ceilings")]
if not measured:
    print("none: lab ran on no GPU")
else:
    print("| shape | run | device | copy GB/s | GEMM TFLOP/s |")
    print("| --- | --- | --- | ---: | ---: |")
for s, run, c in measured:
    print(f"| {s} | {run} | {c['device_name']} | {c['copy_gb_s']:,.0f} | {c['gemm_tflop_s']:,.1f} |")
EOF
[[ $? -eq 0 ]] || { status=1; failed+=("the table (results: $RESULTS)"); }

echo
cat "$LOGS/table.md"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo
    echo "Failed steps:"
    printf -- '- %s\n' "${failed[@]}"
fi
exit $status
