//! How fast the GEMMs of one batch-1 decode step stream their weights, alone (no attention,
//! norms or sampling between them), against one large GEMM over the same bytes: what a step
//! loses to starting and finishing 121 matrices of 1–7 MB instead of streaming one.
//!
//! SmolLM2-135M's shapes in f32 (30 layers of qkv [960, 576], o [576, 576], gate_up
//! [3072, 576], down [576, 1536], then the LM head [49152, 576]: 538 MB), alternated with one
//! GEMM of the same total size, A B A B.
//!
//! It also times each shape's 30 GEMMs alone (the smaller ones partly from L3) and fits
//! time = fixed + bytes / bandwidth over every GEMM timed alone in the sequence: a fixed cost
//! near zero says a GEMM call costs nothing beyond its bytes. (Run from a thread outside the
//! pool, each GEMM was a hand-off and cost 20 µs more: this example makes its thread the
//! pool's worker 0, as the engine does.)
//!
//! Last, the 121 GEMMs with one task a job (`PackedWeight::tasks_per_job`, the default)
//! against rayon's own splitting, alternated ROUNDS times each: medians.
//!
//! `cargo run --release -p engine --example decode_weight_stream [-- ROUNDS [TOKENS]]`
//! (TOKENS: the decode batch, 1 by default; each GEMM then multiplies that many rows).
//! (`LAB_HUGE_PAGES=off` puts the weights on 4 KiB pages, for comparison).
use engine::backend::cpu_gemm::{gemm, Isa, PackedWeight};
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(6);
    let tokens: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    // This thread becomes the pool's worker 0, as the engine's stepping thread is: each GEMM
    // is then a join, not a hand-off to another thread (`backend::cpu_thread_pool`).
    engine::backend::cpu_thread_pool::build_global(None, true).expect("the pool");
    let isa = Isa::detect();
    let pack = |n: usize, k: usize| PackedWeight::pack(&vec![0.01f32; n * k], n, k, isa);
    let mut layers: Vec<PackedWeight> = Vec::new();
    for _ in 0..30 {
        for (n, k) in [(960, 576), (576, 576), (3072, 576), (576, 1536)] {
            layers.push(pack(n, k));
        }
    }
    layers.push(pack(49152, 576));
    let bytes: usize = layers.iter().map(|w| w.data.len() * 4).sum();
    let one = pack(bytes / 4 / 576, 576);
    let time = |ws: &[PackedWeight]| {
        let start = Instant::now();
        for w in ws {
            let (x, mut out) = (vec![1.0f32; w.k * tokens], vec![0.0f32; w.n * tokens]);
            gemm(&mut out, &x, w, None, tokens);
            std::hint::black_box(&out);
        }
        start.elapsed().as_secs_f64()
    };
    println!(
        "{} threads, {}, {tokens} tokens, {:.0} MB per step",
        rayon::current_num_threads(),
        isa.name(),
        bytes as f64 / 1e6
    );
    let names = ["qkv", "o", "gate_up", "down"];
    for (i, name) in names.iter().enumerate() {
        let ws: Vec<PackedWeight> = layers.iter().skip(i).step_by(4).take(30).cloned().collect();
        let b: usize = ws.iter().map(|w| w.data.len() * 4).sum();
        time(&ws);
        let s = (0..3).map(|_| time(&ws)).fold(f64::INFINITY, f64::min);
        println!(
            "{name:>8}: 30 GEMMs {:.3} ms, {:.1} GB/s",
            s * 1e3,
            b as f64 / s / 1e9
        );
    }
    let lm = std::slice::from_ref(layers.last().unwrap());
    time(lm);
    let s = (0..3).map(|_| time(lm)).fold(f64::INFINITY, f64::min);
    println!(
        " lm_head: {:.3} ms, {:.1} GB/s",
        s * 1e3,
        (lm[0].data.len() * 4) as f64 / s / 1e9
    );
    // Each GEMM timed alone inside the sequence: time = a + bytes / B by least squares.
    let mut pts = Vec::new();
    for _ in 0..5 {
        for w in &layers[..120] {
            let (x, mut out) = (vec![1.0f32; w.k * tokens], vec![0.0f32; w.n * tokens]);
            let t = Instant::now();
            gemm(&mut out, &x, w, None, tokens);
            pts.push(((w.data.len() * 4) as f64, t.elapsed().as_secs_f64()));
            std::hint::black_box(&out);
        }
    }
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let b = sxy / sxx;
    println!(
        "per GEMM: {:.1} us fixed + bytes at {:.1} GB/s",
        (my - b * mx) * 1e6,
        1.0 / b / 1e9
    );
    for _ in 0..rounds {
        let step = time(&layers);
        let big = time(std::slice::from_ref(&one));
        println!(
            "121 GEMMs {:.2} ms ({:.1} GB/s)   one GEMM {:.2} ms ({:.1} GB/s)   ratio {:.2}",
            step * 1e3,
            bytes as f64 / step / 1e9,
            big * 1e3,
            bytes as f64 / big / 1e9,
            big / step
        );
    }
    let mut by_split = [Vec::new(), Vec::new()];
    for i in 0..2 * rounds {
        let per_job = [1, usize::MAX][i % 2];
        layers.iter_mut().for_each(|w| w.tasks_per_job = per_job);
        by_split[i % 2].push(time(&layers));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "121 GEMMs, one task a job {:.2} ms, rayon's splitting {:.2} ms (medians of {rounds})",
        median(&mut by_split[0]) * 1e3,
        median(&mut by_split[1]) * 1e3
    );
}
