//! Quick timing of the linear kernel at decode and prefill shapes (GFLOP/s, GB/s).
fn main() {
    let (k, n) = (576usize, 49152usize); // the LM head of SmolLM2
    let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
    for t in [1usize, 4, 8, 16, 64, 512] {
        let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0; t * n];
        let reps = (2000 / t).max(3);
        let start = std::time::Instant::now();
        for _ in 0..reps {
            engine::ops::linear::linear(&mut out, &x, &w, None, t);
        }
        let s = start.elapsed().as_secs_f64() / reps as f64;
        println!(
            "t={t:4}  {:8.3} ms  {:6.1} GFLOP/s  {:5.1} GB/s weights",
            s * 1e3,
            2.0 * (t * k * n) as f64 / s / 1e9,
            (k * n * 4) as f64 / s / 1e9
        );
    }
}
