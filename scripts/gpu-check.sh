#!/usr/bin/env bash
# Every GPU test and benchmark of the kernels crate, in one run, with a table printed last.
#
#   scripts/gpu-check.sh build   # here (has cargo): builds the test binaries and the bench
#                                # into gpu-bin/ (git-ignored)
#   scripts/gpu-check.sh         # on the GPU machine (no cargo), from the repo root:
#                                # runs gpu-bin/tests/* and gpu-bin/kernel_bench
#
# Logs go to $OUT/gpu-logs (the device runner's output folder) or ./gpu-logs when OUT is unset.
# Exit status: 0 only if every test binary passed and the bench ran.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "build" ]]; then
    set -e
    rm -rf gpu-bin && mkdir -p gpu-bin/tests
    # Integration-test binaries only (not the lib's unit tests or the examples).
    cargo test -p kernels --release --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        strip -o "gpu-bin/tests/$name" "$exe" # the device run carries 64 MiB at most
    done
    # The engine's GPU tests (CUDA engine against the CPU engine; the kernel sequence of a
    # forward step against the book's data file).
    cargo test -p engine --release --no-run --test cuda_engine --test kernel_sequence --test preemption_cuda --test min_tokens --test async_scheduling --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        strip -o "gpu-bin/tests/engine-$name" "$exe"
    done
    # Stage 4's `.cu` exercises, on their reference solutions (the learners' stubs fail by design).
    cargo test -p stage4 --features reference --release --no-run --test cuda --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
        strip -o "gpu-bin/tests/stage4-$name" "$exe"
    done
    cargo build -p kernels --release --example kernel_bench --example nccl_bench \
        --example grid_barrier_bench
    strip -o gpu-bin/kernel_bench target/release/examples/kernel_bench
    strip -o gpu-bin/nccl_bench target/release/examples/nccl_bench
    strip -o gpu-bin/grid_barrier_bench target/release/examples/grid_barrier_bench
    cargo build -p engine --release --bin lab --bin tracer
    strip -o gpu-bin/lab target/release/lab
    strip -o gpu-bin/tracer target/release/tracer
    du -sh gpu-bin
    exit 0
fi

# NVLink SHARP multicast is not available to our containers (docs/gpu.md): NCCL must not try it.
export NCCL_NVLS_ENABLE=0
LOGS="${OUT:+$OUT/}gpu-logs"
mkdir -p "$LOGS"
{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
} | tee "$LOGS/machine.txt"

status=0
summary=()
for t in gpu-bin/tests/*; do
    name=$(basename "$t")
    log="$LOGS/test-$name.log"
    start=$(date +%s%N)
    "$t" --test-threads=1 --nocapture >"$log" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    result=$(grep -h "^test result:" "$log" | tail -1 | sed 's/^test result: //; s/; finished.*//')
    # libtest may print `test name ... ` on the same line before a test's own `skipped: ...`.
    # A skip is a failure on the GPU machine, except a collective's on a machine of one GPU.
    if grep -q "skipped: " "$log"; then
        result="SKIPPED ($(grep -h -m1 -o 'skipped: .*' "$log"))"
        grep -q "skipped: an all-reduce needs two GPUs" "$log" || rc=1
    fi
    [[ $rc -ne 0 ]] && status=1
    summary+=("| $name | $([[ $rc -eq 0 ]] && echo ok || echo FAIL) | ${result:-no result line} | $((ms / 1000)).$(( (ms % 1000) / 100 )) s |")
    grep -h "relative L2\|exact\|KERNELS_SEED\|panicked" "$log" | sed "s/^/  [$name] /"
done

bench_log="$LOGS/kernel_bench.log"
if gpu-bin/kernel_bench >"$bench_log" 2>&1; then bench=ok; else bench=FAIL; status=1; fi
# NCCL's bus bandwidth, where there are two GPUs or more (not a failure on one).
gpu-bin/nccl_bench >"$LOGS/nccl_bench.log" 2>&1

echo
echo "## kernels tests ($(cat "$LOGS/machine.txt" | tr '\n' ' '))"
echo "| test binary | status | result | wall |"
echo "| --- | --- | --- | ---: |"
printf '%s\n' "${summary[@]}"
echo
echo "## kernel_bench: $bench (log: $bench_log)"
grep -h "^|\|^kernel_bench on" "$bench_log" || tail -5 "$bench_log"
echo
echo "## nccl_bench"
grep -h "^|\|^nccl_bench" "$LOGS/nccl_bench.log" || tail -2 "$LOGS/nccl_bench.log"
exit $status
