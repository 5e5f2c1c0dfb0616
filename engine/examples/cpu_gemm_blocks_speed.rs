//! Times the CPU GEMM from GGUF blocks (`backend::cpu_gemm::gemm_blocks_with`) on SmolLM2's
//! shapes: the weights dequantized in registers inside the micro-kernel against dequantized
//! into the L1 buffer first, at decode and prefill token counts, on the detected instruction
//! set, beside the f32 GEMM. Each line alternates the variants (A B A B), so a machine whose
//! load changes during the run moves them alike; the best of the repeats is kept.
//!
//! `cargo run --release -p engine --example cpu_gemm_blocks_speed [-- TOKENS...]`
//! (`RAYON_NUM_THREADS=1` for one core's figures.)
use engine::backend::cpu_gemm::{
    gemm, gemm_blocks_with, Dequantize, Isa, PackedBlocks, PackedWeight,
};
use engine::model_loader::dequant::{dequantize, GgmlType};

/// `n` rows of `k / 32` blocks of `format`, deterministic, with scales of a real model's size.
fn blocks(format: GgmlType, n: usize, k: usize) -> Vec<u8> {
    let mut s = 0x5eedu64;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let mut bytes = Vec::new();
    for _ in 0..n * k / 32 {
        let unit = |v: u32| (v as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
        bytes.extend(half::f16::from_f32(unit(next()) * 0.02).to_le_bytes());
        if format == GgmlType::Q4_1 {
            bytes.extend(half::f16::from_f32(unit(next()) * 0.1).to_le_bytes());
        }
        let quants = if format == GgmlType::Q4_1 { 16 } else { 32 };
        bytes.extend((0..quants).map(|_| next() as u8));
    }
    bytes
}

fn main() {
    let tokens: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tokens = if tokens.is_empty() {
        vec![1, 8, 16, 32, 64, 128]
    } else {
        tokens
    };
    let isa = Isa::detect();
    println!(
        "instruction set {}, {} threads",
        isa.name(),
        rayon::current_num_threads()
    );
    let shapes = [
        ("qkv_proj", 960, 576, GgmlType::Q4_1),
        ("gate_up", 3072, 576, GgmlType::Q4_1),
        ("down_proj", 576, 1536, GgmlType::Q4_1),
        ("lm_head", 49152, 576, GgmlType::Q8_0),
    ];
    for (name, n, k, format) in shapes {
        let bytes = blocks(format, n, k);
        let mut w = vec![0.0f32; n * k];
        dequantize(format, &bytes, &mut w);
        let packed = PackedWeight::pack(&w, n, k, isa);
        let b = PackedBlocks::pack(&bytes, format, n, k, isa).unwrap();
        for &t in &tokens {
            let x: Vec<f32> = (0..t * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut out = vec![0.0; t * n];
            let reps = (100_000_000 / (t * k * n)).clamp(3, 2000);
            let mut best = [f64::INFINITY; 3];
            for _round in 0..4 {
                for (v, best) in best.iter_mut().enumerate() {
                    let run = |o: &mut [f32]| match v {
                        0 => gemm_blocks_with(o, &x, &b, None, t, Dequantize::InRegisters),
                        1 => gemm_blocks_with(o, &x, &b, None, t, Dequantize::Buffer),
                        _ => gemm(o, &x, &packed, None, t),
                    };
                    run(&mut out);
                    let start = std::time::Instant::now();
                    for _ in 0..reps {
                        run(&mut out);
                    }
                    *best = best.min(start.elapsed().as_secs_f64() / reps as f64);
                }
            }
            let gflops = |s: f64| 2.0 * (t * k * n) as f64 / s / 1e9;
            let (blocks_gb, f32_gb) = (b.bytes() as f64 / 1e9, (k * n * 4) as f64 / 1e9);
            println!(
                "{name:>9} [{n}x{k}] {format:?} t={t:<4} | registers {:6.1} GF/s {:5.1} GB/s \
                 | buffer {:6.1} GF/s {:5.1} GB/s | f32 {:6.1} GF/s {:5.1} GB/s | registers/buffer {:.2}",
                gflops(best[0]),
                blocks_gb / best[0],
                gflops(best[1]),
                blocks_gb / best[1],
                gflops(best[2]),
                f32_gb / best[2],
                best[1] / best[0],
            );
        }
    }
}
