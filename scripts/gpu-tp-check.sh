#!/usr/bin/env bash
# Tensor parallelism on two GPUs, in one run: the distributed issue's GPU figures.
#
#   scripts/gpu-check.sh build        # here (has cargo): gpu-bin/ with lab, tracer, the tests
#   scripts/gpu-tp-check.sh [PART...] # on a machine with two GPUs or more, from the repo root
#
# PARTS (default: all, in this order):
#   tests   kernels' NCCL tests (all-reduce, all-gather), the one-shot all-reduce kernel
#           (kernels::custom_all_reduce, the engine's default for a TP group of threads with a
#           GPU each), and the engine's GPU tests
#           (TP 2 eager, with CUDA graphs, with the custom all-reduce; TP 2 x PP 2 on NCCL;
#           against the CPU engine)
#   bench   decode step of the Llama-2-7B shape (random weights) at batch 32 and 1, beside its
#           floor at the copy bandwidth measured in each run (`lab bench` prints both; each
#           run takes 40-50 s, most of it making the weights): TP 1 on one
#           GPU; TP 2 on two, with --enforce-eager (every all-reduce is timed, for the
#           communication share of a step), with --custom-all-reduce off (NCCL inside the
#           decode steps' CUDA graphs) and as it runs by default (the one-shot all-reduce over
#           peer memory inside those graphs)
#   tracer  `tracer --device cuda --tp 2` on the Llama-3.2-1B shape: per-kernel and
#           per-collective times, all-reduce bytes against the formula
#   gemv    (not in the default) the GEMV's split-K rule at the 7B shapes: kernel_bench
#           --tp-shapes, then the batch-1 decode step, TP 1 and TP 2, with the rule as it is
#           and with LAB_GEMV_SPLIT_BELOW=4
#   skinny  (not in the default) skinny_gemm against cuBLAS: its test (both main loops),
#           kernel_bench --skinny, the engine's GPU tests with its mma.sync main loop (the TMA
#           one is the default, which part tests runs), and the 7B decode step at batch 32,
#           TP 1 and 2, with it (the default) and with cuBLAS (LAB_SKINNY_MAX_TOKENS=0), two
#           rounds (8 runs: about 6 minutes)
#   early   (not in the default) decode attention's early reads (the engine's default since
#           2026-11-30): the kernel test, the engine's GPU tests with LAB_ATTENTION_EARLY=0,
#           batch-1 decode of the 135M and 1B shapes with it off and on, two rounds (about 3
#           minutes; one GPU is enough)
#   ncu     (not in the default) Nsight Compute over `lab bench --workload decode` runs, each
#           MODEL:BATCH:TP in PROFILES (default "7b:32:1 1b:1:1"; MODEL 7b, 1b or 135m):
#           one decode step's kernels, each timed alone (scripts/ncu_step.py). TP 2 (ranks as threads, NCCL's
#           kernels left out of the profile) ended in "free(): invalid pointer" under ncu
#           on 2026-11-29, before its first profiled kernel; not solved
#   launch  `lab launch --nproc-per-node 2` (one process per GPU, NCCL's id over loopback TCP)
#           against two threads: the same tokens; then one rank killed mid-run: the other must
#           end with a one-line error within the collective timeout
#
# BATCHES (default "32 1") picks the bench's batch sizes; RUNS (default 3) its timed runs.
# Logs go to $OUT/tp-logs (./tp-logs when OUT is unset); a summary prints last.
# Exit status: 0 only if every part that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 # NVLink SHARP is not available to our containers (docs/gpu.md)
export LAB_KERNEL_CACHE=${LAB_KERNEL_CACHE:-/tmp/lab-kernel-cache}
LOGS="${OUT:+$OUT/}tp-logs"
mkdir -p "$LOGS"
PARTS=("${@:-tests bench tracer launch}")
read -r -a PARTS <<<"${PARTS[*]}"
LAB=gpu-bin/lab
SEVEN_B=engine/configs/llama-2-7b.json
ONE_B=engine/configs/llama-3.2-1b.json
status=0
summary=()
note() { summary+=("$1"); echo "$1"; }

date -u +"%Y-%m-%d %H:%M UTC" | tee "$LOGS/machine.txt"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader | tee -a "$LOGS/machine.txt"
nvidia-smi topo -m >>"$LOGS/machine.txt" 2>&1

part_tests() {
    # The one-shot all-reduce spins on flags in peer memory: a broken peer mapping hangs it, so
    # it gets a short limit and runs last.
    for t in gpu-bin/tests/nccl gpu-bin/tests/engine-cuda_engine gpu-bin/tests/custom_all_reduce gpu-bin/tests/custom_all_reduce_timeout; do
        [[ -x $t ]] || { note "| test $(basename "$t") | missing |"; status=1; continue; }
        log="$LOGS/test-$(basename "$t").log"
        limit=200
        [[ $t == */custom_all_reduce* ]] && limit=60
        timeout $limit "$t" --test-threads=1 --nocapture >"$log" 2>&1
        rc=$?
        [[ $rc -ne 0 ]] && status=1
        note "| test $(basename "$t") | rc $rc | $(grep -h '^test result:' "$log" | tail -1) |"
        grep -h "agree\|exact\|skipped" "$log" | sed 's/^/    /'
    done
}

# One `lab bench --workload decode` run; prints its JSON line's key figures.
bench_one() {
    local name=$1
    shift
    local log="$LOGS/bench-$name.log"
    timeout 200 "$LAB" bench --workload decode --runs "${RUNS:-3}" --json --model "$SEVEN_B" --random-weights \
        --device cuda "$@" >"$log" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && status=1
    python3 - "$name" "$log" "$rc" <<'EOF'
import json, sys
name, log, rc = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(log) if l.startswith("{")]
if not rows:
    print(f"| {name} | rc {rc} | no result: see {log} |")
    sys.exit()
r = rows[-1]
ar = [x.get("all_reduce_share") for x in r.get("ranks", [])]
share = " / ".join("n/a" if s is None else f"{100 * s:.1f}%" for s in ar) or "-"
comm = [x.get("comm_share") for x in r.get("ranks", [])]
cshare = " / ".join("n/a" if s is None else f"{100 * s:.1f}%" for s in comm) or "-"
ok = r.get("all_reduce_matches_closed_form", "-")
floor = r.get("floor_ms_per_step", float("nan"))
r0 = (r.get("ranks") or [{}])[0]
split = "-"
if "step_ms_per_step" in r0:
    split = f"{r0['step_ms_per_step']:.3f} / {r0['outside_ms_per_step']:.3f} / {r['engine_ms_per_step']:.3f}"
copy = r.get("ceilings", {}).get("copy_gb_s", float("nan"))
print(f"| {name} | {r['ms_per_step']:.3f} | {r.get('device_ms_per_step', float('nan')):.3f} "
      f"| {r['tokens_per_s']:.0f} | {share} | {cshare} | {ok} | {floor:.3f} | {copy:.0f} | {split} |")
EOF
}

bench_header() {
    echo "| run | ms/step wall | ms/step device | tok/s | all-reduce share (rank 0 / 1) | all collectives | bytes = closed form | floor ms/step | copy GB/s | rank 0's part / outside it / engine, ms |" | tee -a "$LOGS/bench.md"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |" | tee -a "$LOGS/bench.md"
}

part_bench() {
    bench_header
    for b in ${BATCHES:-32 1}; do
        bench_one "7b-b$b-tp1" --batch-size $b | tee -a "$LOGS/bench.md"
        bench_one "7b-b$b-tp2-eager" --batch-size $b --tp 2 --enforce-eager | tee -a "$LOGS/bench.md"
        bench_one "7b-b$b-tp2-nccl" --batch-size $b --tp 2 --custom-all-reduce off | tee -a "$LOGS/bench.md"
        bench_one "7b-b$b-tp2" --batch-size $b --tp 2 | tee -a "$LOGS/bench.md"
    done
    note "bench: $LOGS/bench.md"
}

part_tracer() {
    local log="$LOGS/tracer.log"
    timeout 300 gpu-bin/tracer --device cuda --tp 2 --model "$ONE_B" --random-weights \
        --max-tokens 16 --trace-out "$LOGS/trace-tp2.json" --html "$LOGS/trace-tp2.html" >"$log" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && status=1
    note "| tracer --device cuda --tp 2 | rc $rc | $(grep -h 'all-reduce calls and tensor bytes' "$log") |"
    grep -A5 'all-reduce traffic' "$log" | sed 's/^/    /'
    grep -A6 "GPU's time by op" "$log" | sed 's/^/    /'
}

# The rank's pid among `lab generate` processes whose environment says LAB_LOCAL_RANK=$1.
rank_pid() {
    for p in $(pgrep -f "lab generate"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "LAB_LOCAL_RANK=$1"; then
            echo "$p"
            return
        fi
    done
}

part_launch() {
    # Random weights conditioned as scripts/gpu-engine-check.sh does (unconditioned ones give
    # one token over and over, which would make "the same tokens" say little); prompts of ids.
    local dir=/tmp/tp-check-1b prompts="$LOGS/prompts.json"
    timeout 200 "$LAB" save-model --model "$ONE_B" --random-weights --embed-scale 0.0625 \
        --query-scale 4 --out "$dir" >"$LOGS/save-model.log" 2>&1 || {
        status=1
        note "| launch | save-model failed: see $LOGS/save-model.log |"
        return
    }
    python3 -c 'import json, random, sys
r = random.Random(0)
json.dump([[r.randrange(10000) for _ in range(k)] for k in (5, 77, 300)], open(sys.argv[1], "w"))' "$prompts"
    local gpus
    gpus=$(nvidia-smi -L | wc -l)
    local how="on NCCL"
    [[ $gpus -lt 2 ]] && how="sharing one GPU: sums through the host"
    local args=(generate --device cuda --json --ignore-eos --model "$dir" --tp 2
        --max-tokens 64 --prompts-file "$prompts")
    timeout 300 "$LAB" "${args[@]}" >"$LOGS/threads.json" 2>"$LOGS/threads.err"
    local rt=$?
    timeout 300 "$LAB" launch --nproc-per-node 2 --master-port 29511 -- "${args[@]}" \
        >"$LOGS/processes.json" 2>"$LOGS/processes.err"
    local rp=$?
    if [[ $rt -eq 0 && $rp -eq 0 ]] && cmp -s "$LOGS/threads.json" "$LOGS/processes.json"; then
        local distinct
        distinct=$(python3 -c 'import json, sys
print(len({t for o in json.load(open(sys.argv[1])) for t in o["token_ids"]}))' "$LOGS/threads.json")
        note "| launch: 2 processes vs 2 threads, TP 2 $how | same output ($distinct distinct tokens) |"
    else
        status=1
        note "| launch: 2 processes vs 2 threads | DIFFER or failed (rc $rt / $rp): see $LOGS |"
    fi

    # A long run, then rank 1 killed: rank 0 must fail with one line within the timeout.
    local long=(generate --device cuda --ignore-eos --model "$dir" --tp 2 --max-tokens 20000
        --max-num-seqs 1 --collective-timeout 20 --prompts-file "$prompts")
    "$LAB" launch --nproc-per-node 2 --master-port 29512 -- "${long[@]}" \
        >"$LOGS/kill.out" 2>"$LOGS/kill.err" &
    local launcher=$!
    sleep 25
    local victim
    victim=$(rank_pid 1)
    if [[ -z $victim ]]; then
        status=1
        note "| kill a rank | rank 1 not found running (ended early?): see $LOGS/kill.err |"
        wait $launcher
        return
    fi
    local t0
    t0=$(date +%s.%N)
    kill -9 "$victim"
    wait $launcher
    local rc=$?
    local took
    took=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
    note "| kill rank 1 (pid $victim) | launcher rc $rc after ${took} s (timeout 20 s) | $(grep -h 'error' "$LOGS/kill.err" | head -3 | tr '\n' ' ') |"
    [[ $rc -eq 0 ]] && status=1
}

# The GEMV's split-K rule at the 7B shapes: kernel_bench's projections and fused norm GEMVs at
# TP 1 and TP 2 sizes, then the decode step with the rule as it is and with
# LAB_GEMV_SPLIT_BELOW=4 (split-K up to 4 blocks per SM), TP 1 and TP 2, batch 1.
part_gemv() {
    local log="$LOGS/kernel_bench-tp-shapes.log"
    timeout 200 gpu-bin/kernel_bench --tp-shapes >"$log" 2>&1 || status=1
    grep -h "^copy\|^[Tt][Pp] [12] \|^|" "$log"
    bench_header
    for below in default 4; do
        for tp in 1 2; do
            if [[ $below == default ]]; then
                bench_one "7b-b1-tp$tp-split-default" --batch-size 1 --tp $tp
            else
                LAB_GEMV_SPLIT_BELOW=$below bench_one "7b-b1-tp$tp-split-below-$below" --batch-size 1 --tp $tp
            fi
        done
    done | tee -a "$LOGS/bench.md"
    note "gemv: $log, $LOGS/bench.md"
}

# Runs test binary BIN (VAR=VALUE settings after it) into LOG and notes its result as LABEL;
# returns its exit status.
run_test() {
    local label=$1 bin=$2 log=$3
    shift 3
    env "$@" timeout 200 "$bin" --test-threads=1 --nocapture >"$log" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && status=1
    note "| test $label | rc $rc | $(grep -h '^test result:' "$log" | tail -1) |"
    return $rc
}

# skinny_gemm (kernels/cuda/skinny_gemm.cu) against cuBLAS: its test against the f64 reference,
# its times against cuBLAS per projection and split, the engine's GPU tests with its other main
# loop, and the 7B decode step at batch 32 with it on and off, A B A B.
part_skinny() {
    # Without a passing test its times would mean nothing.
    run_test skinny_gemm gpu-bin/tests/skinny_gemm "$LOGS/test-skinny_gemm.log" || return
    grep -h "agree" "$LOGS/test-skinny_gemm.log" | sed 's/^/    /'
    local log="$LOGS/kernel_bench-skinny.log"
    timeout 200 gpu-bin/kernel_bench --skinny >"$log" 2>&1 || status=1
    grep -h "^copy\|^|" "$log"
    run_test "engine-cuda_engine, skinny_gemm's mma.sync loop" gpu-bin/tests/engine-cuda_engine \
        "$LOGS/test-engine-cuda_engine-skinny-mma.log" LAB_SKINNY_MAIN_LOOP=mma LAB_SKINNY_MAX_TOKENS=32
    bench_header
    for round in 1 2; do
        for tp in 1 2; do
            LAB_SKINNY_MAX_TOKENS=0 bench_one "7b-b32-tp$tp-cublas-$round" --batch-size 32 --tp $tp
            bench_one "7b-b32-tp$tp-skinny-$round" --batch-size 32 --tp $tp
        done
    done | tee -a "$LOGS/bench.md"
    note "skinny: $log, $LOGS/bench.md"
}

# Decode attention's early reads (on by default; LAB_ATTENTION_EARLY=0 turns them off): the
# kernel test (early variants first), the engine's GPU tests with them off (the default runs
# in part tests), and batch-1 decode of the 135M and 1B shapes off and on, two rounds
# (scripts/gpu-env-ab.sh).
part_early() {
    run_test "paged_attention (early reads included)" gpu-bin/tests/paged_attention \
        "$LOGS/test-paged_attention.log" || return
    run_test "engine-cuda_engine, LAB_ATTENTION_EARLY=0" gpu-bin/tests/engine-cuda_engine \
        "$LOGS/test-engine-cuda_engine-late.log" LAB_ATTENTION_EARLY=0
    SETTINGS="late:LAB_ATTENTION_EARLY=0 default" CASES="135m:1:1 1b:1:1" ROUNDS=2 \
        timeout 400 bash scripts/gpu-env-ab.sh "$LAB" | tee "$LOGS/early-ab.md"
    note "early: $LOGS/early-ab.md"
}

# One decode step's kernels, each timed alone by Nsight Compute (in the replayed graphs, node by
# node). The launches skipped first are the prefill and the first decode steps.
part_ncu() {
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    if [[ -z $ncu ]]; then
        note "| ncu | skipped: ncu not found |"
        return
    fi
    local run model b tp
    for run in ${PROFILES:-7b:32:1 1b:1:1}; do
        IFS=: read -r model b tp <<<"$run"
        local config=$SEVEN_B
        [[ $model == 1b ]] && config=$ONE_B
        [[ $model == 135m ]] && config=engine/configs/smollm2-135m.json
        local name="$model-b$b-tp$tp"
        timeout 240 "$ncu" --csv --page raw --metrics gpu__time_duration.sum --cache-control none \
            --kernel-name 'regex:^(?!nccl)' --launch-skip "${NCU_SKIP:-4000}" --launch-count "${NCU_COUNT:-1400}" \
            "$LAB" bench --workload decode --runs 1 --json --model "$config" --random-weights \
            --device cuda --batch-size "$b" --tp "$tp" --collective-timeout 600 \
            >"$LOGS/ncu-$name.csv" 2>"$LOGS/ncu-$name.err"
        local rc=$?
        python3 scripts/ncu_step.py "$LOGS/ncu-$name.csv" >"$LOGS/ncu-$name.md" 2>&1 || status=1
        note "| ncu $name | rc $rc | $LOGS/ncu-$name.md |"
        cat "$LOGS/ncu-$name.md"
    done
}

for part in "${PARTS[@]}"; do
    case $part in
    tests) part_tests ;;
    bench) part_bench ;;
    tracer) part_tracer ;;
    launch) part_launch ;;
    gemv) part_gemv ;;
    skinny) part_skinny ;;
    early) part_early ;;
    ncu) part_ncu ;;
    *) echo "unknown part: $part (tests bench tracer launch gemv skinny early ncu)" >&2; exit 2 ;;
    esac
done
echo
echo "## tensor parallelism on $(nvidia-smi -L | wc -l) GPUs ($(head -1 "$LOGS/machine.txt"))"
printf '%s\n' "${summary[@]}"
[[ -f "$LOGS/bench.md" ]] && cat "$LOGS/bench.md"
exit $status
