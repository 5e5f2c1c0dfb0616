//! The CPU's compute ceiling for prefill and batched decode, measured in the same run.
//!
//! A prefill's linear layers are bound by arithmetic (2 FLOPs per weight per token), so their
//! ceiling is the rate at which the cores retire FMAs: every thread of the pool running
//! `cpu_gemm::fma_peak`'s register-only chains at once, with the instruction set the GEMM
//! uses. Measured, because the vector width, the FMA units per core and the clock they run at
//! differ from machine to machine (a fixed default of 134 GFLOP/s, taken on a 2-core AVX2
//! machine, was exceeded by 1.8-2× on a 2-core AVX-512 one). Beside it the probe times the
//! engine's own GEMM at 512 tokens, which says how much of the peak the kernel reaches when
//! nothing else is in the way; it is printed, not used as the ceiling.

use engine::backend::cpu_gemm::{fma_peak, gemm, Isa, PackedWeight};

use super::memory_probe::best_seconds;

/// Rounds of every thread's chains per measurement: about 0.8 GFLOP a thread with AVX-512,
/// 5 ms at 165 GFLOP/s a core.
const ITERS: usize = 2_000_000;

/// FLOP/s, each the best of a few measurements.
#[derive(Debug, Clone, Copy)]
pub struct ComputeCeiling {
    /// The FMA units' peak, every thread at once.
    pub peak: f64,
    /// The linear layers' GEMM at 512 tokens over a `[3072, 576]` weight (SmolLM2's
    /// gate/up, 7 MB).
    pub gemm: f64,
}

/// Measures both rates on the global pool's threads.
pub fn measure() -> ComputeCeiling {
    let isa = Isa::detect();
    let threads = rayon::current_num_threads();
    let chains = || {
        rayon::broadcast(|_| std::hint::black_box(fma_peak::chains(isa, ITERS)));
    };
    // Untimed: wakes the threads and brings the clock up.
    chains();
    // The best of many short tries: a VM's core is at times taken away for milliseconds
    // (steal time), and a try in which one thread waited measures half the peak. Best of 5
    // still did so once on a 2-core AMD EPYC VM (2026-12-01: 96 GFLOP/s where 190 was the
    // rule, and a prefill then ran at 112% of its "ceiling").
    let chains = best_seconds(20, chains);
    let (n, k, t) = (3072, 576, 512);
    let w = PackedWeight::pack(&vec![0.01f32; n * k], n, k, isa);
    let (x, mut out) = (vec![0.5f32; t * k], vec![0.0f32; t * n]);
    let mut multiply = || {
        gemm(&mut out, &x, &w, None, t);
        std::hint::black_box(&out);
    };
    multiply(); // untimed: the weight's first pass from memory
    let gemm_seconds = best_seconds(3, multiply);
    ComputeCeiling {
        peak: threads as f64 * fma_peak::flops(isa, ITERS) / chains,
        gemm: 2.0 * (n * k * t) as f64 / gemm_seconds,
    }
}
