//! Software prefetch in the CPU GEMM, on against off, pair by pair in one process: the GEMMs
//! of one decode step of SmolLM2-135M in f32 (30 layers of qkv [960, 576], o [576, 576],
//! gate_up [3072, 576], down [576, 1536], then the LM head [49152, 576]: 538 MB, more than any
//! L3), back to back at each token count, with `PackedWeight::prefetch_ahead` set to 0 and to
//! each distance asked for, the order swapped every pair (a VM's speed drifts by more than the
//! effect within minutes, so only pairs are compared).
//!
//! `cargo run --release -p engine --example gemm_prefetch_ab [-- PAIRS [TOKENS...]]`
//! (`LAB_CPU_PREFETCH=BYTES` sets the distance that is "on"; default `PREFETCH_AHEAD`.)
use engine::backend::cpu_gemm::{gemm, Isa, PackedWeight};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let pairs: usize = args.next().unwrap_or(10);
    let tokens: Vec<usize> = args.collect();
    let tokens = if tokens.is_empty() {
        vec![1, 8]
    } else {
        tokens
    };
    // This thread becomes the pool's worker 0, as the engine's stepping thread is.
    engine::backend::cpu_thread_pool::build_global(None, true).expect("the pool");
    let isa = Isa::detect();
    let on = isa.prefetch_ahead();
    let pack = |n: usize, k: usize| PackedWeight::pack(&vec![0.01f32; n * k], n, k, isa);
    let mut layers = Vec::new();
    for _ in 0..30 {
        for (n, k) in [(960, 576), (576, 576), (3072, 576), (576, 1536)] {
            layers.push(pack(n, k));
        }
    }
    layers.push(pack(49152, 576));
    let bytes: usize = layers.iter().map(|w| w.data.len() * 4).sum();
    println!(
        "{} threads, {}, {:.0} MB per step, prefetch {on} bytes ahead against none",
        rayon::current_num_threads(),
        isa.name(),
        bytes as f64 / 1e6
    );
    for &t in &tokens {
        let step = |layers: &mut [PackedWeight], ahead: usize| {
            let start = Instant::now();
            for w in layers.iter_mut() {
                w.prefetch_ahead = ahead;
                let (x, mut out) = (vec![1.0f32; t * w.k], vec![0.0f32; t * w.n]);
                gemm(&mut out, &x, w, None, t);
                std::hint::black_box(&out);
            }
            start.elapsed().as_secs_f64()
        };
        step(&mut layers, 0);
        let (mut off_s, mut on_s, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for pair in 0..pairs {
            let (a, b) = if pair % 2 == 0 {
                let a = step(&mut layers, 0);
                (a, step(&mut layers, on))
            } else {
                let b = step(&mut layers, on);
                (step(&mut layers, 0), b)
            };
            off_s.push(a);
            on_s.push(b);
            ratios.push(b / a);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let faster = ratios.iter().filter(|&&r| r < 1.0).count();
        let (off, on_t, r) = (median(&mut off_s), median(&mut on_s), median(&mut ratios));
        println!(
            "{t:>3} tokens: off {:.2} ms ({:.1} GB/s), on {:.2} ms ({:.1} GB/s), on/off median {r:.3}, on faster in {faster} of {pairs}",
            off * 1e3,
            bytes as f64 / off / 1e9,
            on_t * 1e3,
            bytes as f64 / on_t / 1e9,
        );
    }
}
