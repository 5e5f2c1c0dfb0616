//! Times the CPU GEMM (`backend::cpu_gemm`) on SmolLM2's matrix shapes at decode and prefill
//! token counts, on every instruction set this CPU has, beside the unpacked `ops::linear`:
//! GFLOP/s (the compute-bound regime) and weight GB/s (the memory-bound regime).
//!
//! `cargo run --release -p engine --example cpu_gemm_speed [-- TOKENS...]`
use engine::backend::cpu_gemm::{gemm, Isa, PackedWeight};

fn main() {
    let tokens: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tokens = if tokens.is_empty() {
        vec![1, 8, 64, 512]
    } else {
        tokens
    };
    let shapes = [
        ("qkv_proj", 960, 576),
        ("gate_up", 3072, 576),
        ("down_proj", 576, 1536),
        ("lm_head", 49152, 576),
    ];
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        for &t in &tokens {
            let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut out = vec![0.0; t * n];
            let reps = (400_000_000 / (t * k * n)).clamp(3, 2000);
            let mut time = |f: &mut dyn FnMut(&mut [f32])| {
                f(&mut out);
                let start = std::time::Instant::now();
                for _ in 0..reps {
                    f(&mut out);
                }
                start.elapsed().as_secs_f64() / reps as f64
            };
            let mut line = format!("{name:>9} [{n}x{k}] t={t:<4}");
            let s = time(&mut |o| engine::ops::linear::linear(o, &x, &w, None, t));
            let gflops = |s: f64| 2.0 * (t * k * n) as f64 / s / 1e9;
            let gbs = |s: f64| (k * n * 4) as f64 / s / 1e9;
            line += &format!(" | linear {:6.1} GF/s {:5.1} GB/s", gflops(s), gbs(s));
            for isa in Isa::available().into_iter().filter(|&i| i != Isa::Portable) {
                let p = PackedWeight::pack(&w, n, k, isa);
                let s = time(&mut |o| gemm(o, &x, &p, None, t));
                line += &format!(
                    " | {} {:6.1} GF/s {:5.1} GB/s",
                    isa.name(),
                    gflops(s),
                    gbs(s)
                );
            }
            println!("{line}");
        }
    }
}
