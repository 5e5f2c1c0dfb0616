//! Times the linear kernel on SmolLM2's matrix shapes at decode and prefill token counts:
//! GFLOP/s (compute-bound regime) and weight GB/s (memory-bound regime).
//!
//! `cargo run --release --example linear_speed`
fn main() {
    let shapes = [
        ("qkv_proj", 960, 576),
        ("gate_up", 3072, 576),
        ("down_proj", 576, 1536),
        ("lm_head", 49152, 576),
    ];
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        for t in [1usize, 8, 64, 512] {
            let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut out = vec![0.0; t * n];
            let reps = (200_000_000 / (t * k * n)).clamp(3, 2000);
            let start = std::time::Instant::now();
            for _ in 0..reps {
                engine::ops::linear::linear(&mut out, &x, &w, None, t);
            }
            let s = start.elapsed().as_secs_f64() / reps as f64;
            let gflops = 2.0 * (t * k * n) as f64 / s / 1e9;
            let gbs = (k * n * 4) as f64 / s / 1e9;
            println!(
                "{name:>9} [{n}x{k}] t={t:<4} {:9.3} ms {gflops:7.1} GFLOP/s {gbs:6.1} GB/s",
                s * 1e3
            );
        }
    }
}
