#!/usr/bin/env bash
# Correctness of the engine on the GPU: greedy tokens of `lab generate --device cuda` against
# transformers (bf16, same GPU) and against `lab generate --device cpu`, on random-weight models
# of real shapes that `lab save-model` writes on the spot (real weights cannot be carried there).
#
#   scripts/gpu-engine-check.sh gpu-bin/lab [SHAPE...]   # from the repo root, on the GPU machine
#
# SHAPE names a config in engine/configs (default: smollm2-135m llama-3.2-1b). Per shape:
#   1. lab save-model --random-weights (conditioned: --embed-scale/--query-scale, see
#      engine/src/model_loader/random_conditioning.rs) into a temporary directory;
#   2. scripts/hf_greedy.py: transformers, bf16, sdpa, batch 1, EOS ignored;
#   3. lab generate --json --logit-margins --ignore-eos on each engine device (all prompts batched);
#   4. scripts/compare_greedy.py: engine vs transformers, cuda vs cpu; mismatches count only
#      where the reference's top1-top2 margin is above bf16 noise.
# Prompts: NUM_PROMPTS (8) lists of random ids < 10000, lengths 5..300 (5 and 300 always), from
# Python's random.Random(PROMPT_SEED=0); NEW_TOKENS (32) greedy tokens each.
#
# Environment (defaults for the GPU machine):
#   PYTHON=python3          with torch and transformers
#   HF_DEVICE=cuda          where transformers runs (cpu to try this without a GPU)
#   ENGINE_DEVICES="cuda cpu"
#   CPU_SHAPES="smollm2-135m llama-3.2-1b"   shapes the CPU engine also runs (the 1B shape took
#                           93 s for 16 tokens on 2 busy cores here, prefill-bound: ~20-40 s on 16)
#   EMBED_SCALE=0.0625 QUERY_SCALE=4 WEIGHTS_SEED=0 NEW_TOKENS=32 NUM_PROMPTS=8 PROMPT_SEED=0
# Logs and JSON go to $OUT/gpu-logs/engine-check (./gpu-logs/engine-check when OUT is unset).
# Prints a summary table last. Exit status: 0 only if every step ran and every comparison passed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || ! -x "$1" ]]; then
    echo "usage: $0 PATH/TO/lab [SHAPE...]  (lab must be an executable)" >&2
    exit 2
fi
LAB=$(realpath "$1")
shift
SHAPES=("${@:-smollm2-135m llama-3.2-1b}")
read -r -a SHAPES <<<"${SHAPES[*]}"
PYTHON=${PYTHON:-python3}
HF_DEVICE=${HF_DEVICE:-cuda}
read -r -a ENGINE_DEVICES <<<"${ENGINE_DEVICES:-cuda cpu}"
CPU_SHAPES=${CPU_SHAPES:-smollm2-135m llama-3.2-1b}
NEW_TOKENS=${NEW_TOKENS:-32}
LOGS="${OUT:+$OUT/}gpu-logs/engine-check"
mkdir -p "$LOGS"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

prompts="$LOGS/prompts.json"
"$PYTHON" - "$prompts" "${NUM_PROMPTS:-8}" "${PROMPT_SEED:-0}" <<'EOF' || exit 2
import json, random, sys
path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
lengths = ([5, 300] + [r.randint(5, 300) for _ in range(max(n - 2, 0))])[:n]
with open(path, "w") as f:
    json.dump([[r.randrange(10000) for _ in range(k)] for k in lengths], f)
print(f"prompts: {n}, lengths {lengths}, ids < 10000 (seed {seed}) -> {path}")
EOF

# Runs a step, timing it; its output goes to a log. Prints "ok 12.3s" or "FAIL 12.3s".
step() {
    local log=$1
    shift
    local start=$(date +%s%N)
    "$@" >"$log" 2>&1
    local rc=$?
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    local t="$((ms / 1000)).$(( (ms % 1000) / 100 ))s"
    if [[ $rc -eq 0 ]]; then echo "ok $t"; else echo "FAIL $t"; tail -3 "$log" | sed 's/^/    /' >&2; fi
}

status=0
summary=()
for shape in "${SHAPES[@]}"; do
    echo "== $shape"
    dir="$WORK/$shape"
    cols=()
    save=$(step "$LOGS/$shape-save.log" "$LAB" save-model --model "engine/configs/$shape.json" \
        --random-weights --weights-seed "${WEIGHTS_SEED:-0}" --embed-scale "${EMBED_SCALE:-0.0625}" \
        --query-scale "${QUERY_SCALE:-4}" --out "$dir")
    echo "save-model: $save"
    if [[ $save != ok* ]]; then
        status=1
        summary+=("| $shape | $save | - | - | - | FAIL |")
        continue
    fi
    hf=$(step "$LOGS/$shape-hf.log" "$PYTHON" scripts/hf_greedy.py --model "$dir" \
        --prompts "$prompts" --max-new-tokens "$NEW_TOKENS" --device "$HF_DEVICE" \
        --out "$LOGS/$shape-hf.json")
    echo "transformers ($HF_DEVICE): $hf"
    engines=()
    for dev in "${ENGINE_DEVICES[@]}"; do
        if [[ $dev == cpu && " $CPU_SHAPES " != *" $shape "* ]]; then
            cols+=("$dev: skipped")
            continue
        fi
        out="$LOGS/$shape-$dev.json"
        run=$(step "$LOGS/$shape-$dev.log" bash -c '"$@" >"$0"' "$out" "$LAB" generate \
            --device "$dev" --model "$dir" --prompts-file "$prompts" --max-tokens "$NEW_TOKENS" \
            --ignore-eos --json --logit-margins)
        echo "engine $dev: $run"
        cols+=("$dev: $run")
        [[ $run == ok* ]] && engines+=(--engine "$dev=$out")
    done
    verdict=FAIL
    agreed="-"
    if [[ $hf == ok* && ${#engines[@]} -gt 0 ]]; then
        "$PYTHON" scripts/compare_greedy.py --hf "$LOGS/$shape-hf.json" "${engines[@]}" \
            --title "$shape (new tokens: $NEW_TOKENS)" >"$LOGS/$shape-compare.md" 2>&1
        rc=$?
        cat "$LOGS/$shape-compare.md"
        [[ $rc -eq 0 ]] && verdict=ok
        agreed=$(grep -E "^[a-z0-9]+ vs [a-z0-9]+: " "$LOGS/$shape-compare.md" |
            sed -E 's/^([a-z0-9]+ vs [a-z0-9]+): ([0-9]+\/[0-9]+) tokens agreed.*/\1 \2/' |
            paste -sd ';' -)
    fi
    # Every step must have run: an engine device that failed fails the shape.
    [[ $hf != ok* || " ${cols[*]} " == *FAIL* ]] && verdict=FAIL
    [[ $verdict != ok ]] && status=1
    summary+=("| $shape | $save | $hf | ${cols[*]} | ${agreed:--} | $verdict |")
done

echo
echo "## engine vs transformers (greedy, bf16 noise allowed; logs: $LOGS)"
echo "| shape | save-model | transformers ($HF_DEVICE) | engine runs | tokens agreed | verdict |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${summary[@]}"
exit $status
