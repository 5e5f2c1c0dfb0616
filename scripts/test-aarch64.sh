#!/usr/bin/env bash
# The engine's aarch64 paths tested on an x86-64 machine: the tests cross-compiled for aarch64
# Linux and run in qemu's user-mode emulator. Learners' laptops are often Apple Silicon, whose
# NEON kernels (the GEMM's register tiles over f32 panels and over GGUF blocks, the FMA peak
# probe) a CI machine without an ARM CPU cannot run natively. qemu executes NEON's fused
# multiply-adds with one IEEE rounding each, as the hardware does, so the tests that compare
# every instruction set with the portable kernel bit for bit, and the engine's batch
# invariance, mean on it what they mean on an ARM CPU. Speed is not measured here (emulated
# code runs tens of times slower).
#
# Needs the Rust target (`rustup target add aarch64-unknown-linux-gnu`), a cross linker with
# its C library (Debian: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross) and qemu-aarch64 (Debian:
# qemu-user); `.ci/run` installs them. Without them this prints what is missing and exits 0,
# unless LAB_REQUIRE_AARCH64=1, which makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -m)" = aarch64 ] || [ "$(uname -m)" = arm64 ]; then
    echo "aarch64 tests: this machine is one, and cargo test runs them natively"
    exit 0
fi
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=("aarch64-linux-gnu-gcc (gcc-aarch64-linux-gnu)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (qemu-user)")
[ -d "$sysroot/lib" ] || missing+=("$sysroot (libc6-dev-arm64-cross)")
rustc --print sysroot >/dev/null 2>&1 && [ -d "$(rustc --print sysroot)/lib/rustlib/$target" ] ||
    missing+=("the Rust target $target (rustup target add $target)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "aarch64 tests skipped: missing ${missing[*]}"
    [ "${LAB_REQUIRE_AARCH64:-0}" = 1 ] && exit 1
    exit 0
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
# The engine's unit tests (among them the FMA peak's NEON chains and the sampler), the GEMM
# against the portable kernel on every ISA this CPU has (NEON and portable), f32 panels and
# GGUF blocks, and whole engines batch invariant.
cargo test --target "$target" -p engine --lib --test cpu_gemm --test cpu_gemm_blocks \
    --test batch_invariance
