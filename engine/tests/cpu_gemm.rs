//! The CPU GEMM on every instruction set this machine has: each path agrees bit for bit with
//! the portable one, is batch invariant (a token's row is the same alone, at any place in any
//! batch), and is close to an f64 reference. Because every path gives the very same bits,
//! the engine-level tests (`batch_invariance.rs`, the reference-output tests) that run on the
//! detected path hold on every path.

use engine::backend::cpu_gemm::{
    gemm, gemm_silu_and_mul, silu_and_mul_fits, Isa, PackedWeight, KC,
};
use engine::ops::activation::silu_and_mul;
use proptest::prelude::*;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn run(isa: Isa, x: &[f32], w: &[f32], b: Option<&[f32]>, t: usize, n: usize) -> Vec<f32> {
    let k = w.len() / n;
    let packed = PackedWeight::pack(w, n, k, isa);
    let mut out = vec![f32::NAN; t * n];
    gemm(&mut out, x, &packed, b, t);
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Sizes cross every tile edge: tokens past each ISA's MR, outputs past each NR, and
    /// `k` past the K block.
    #[test]
    fn every_path_equals_portable_and_is_batch_invariant(
        t in 1usize..30,
        k in 1usize..(KC + 70),
        n in 1usize..80,
        bias: bool,
        seed: u64,
    ) {
        let x = values(t * k, seed);
        let w = values(n * k, seed ^ 1);
        let b = values(n, seed ^ 2);
        let b = bias.then_some(&b[..]);
        let portable = run(Isa::Portable, &x, &w, b, t, n);
        for j in 0..t {
            for r in 0..n {
                let want: f64 = (0..k)
                    .map(|c| x[j * k + c] as f64 * w[r * k + c] as f64)
                    .sum::<f64>()
                    + b.map_or(0.0, |b| b[r] as f64);
                let got = portable[j * n + r] as f64;
                prop_assert!((got - want).abs() < 1e-5 * k as f64, "{got} vs {want}");
            }
        }
        for isa in Isa::available() {
            let out = run(isa, &x, &w, b, t, n);
            prop_assert_eq!(bits(&out), bits(&portable), "{:?} differs from portable", isa);
            // Each token alone, and the batch reversed, give the same bits.
            for j in 0..t {
                let alone = run(isa, &x[j * k..(j + 1) * k], &w, b, 1, n);
                prop_assert_eq!(bits(&alone), bits(&out[j * n..(j + 1) * n]), "{:?}: token {} alone", isa, j);
            }
            let rev: Vec<f32> = x.chunks(k).rev().flatten().copied().collect();
            let out_rev = run(isa, &rev, &w, b, t, n);
            let back: Vec<f32> = out_rev.chunks(n).rev().flatten().copied().collect();
            prop_assert_eq!(bits(&back), bits(&out), "{:?}: batch reversed", isa);
        }
    }
}

/// A model-sized projection (SmolLM2-135M's hidden size 576, 1024 outputs) at the batch
/// sizes the engine runs: a prefill of 300 tokens (past one token block of the GEMM's
/// threads), a batch of 8 decodes, one decode.
#[test]
fn model_sized_projection_is_the_same_at_every_batch_size() {
    let (k, n, t) = (576, 1024, 300);
    let x = values(t * k, 3);
    let w = values(n * k, 4);
    let reference = run(Isa::Portable, &x, &w, None, t, n);
    for isa in Isa::available() {
        let packed = PackedWeight::pack(&w, n, k, isa);
        for batch in [t, 8, 1] {
            for start in (0..t).step_by(batch.max(7)) {
                let rows = batch.min(t - start);
                let mut out = vec![f32::NAN; rows * n]; // an element not written fails
                gemm(
                    &mut out,
                    &x[start * k..(start + rows) * k],
                    &packed,
                    None,
                    rows,
                );
                let want = &reference[start * n..(start + rows) * n];
                assert_eq!(bits(&out), bits(want), "{isa:?}, batch {batch} at {start}");
            }
        }
    }
}

/// No input features: every output is the empty sum plus the bias, even right after a GEMM
/// that left its chains in the thread's buffers.
#[test]
fn no_input_features_gives_the_bias() {
    let (t, n) = (20, 40);
    let b = values(n, 7);
    for isa in Isa::available() {
        run(isa, &values(t * 9, 8), &values(n * 9, 9), None, t, n);
        let out = run(isa, &[], &[], Some(&b), t, n);
        let want: Vec<f32> = (0..t).flat_map(|_| b.iter().map(|b| 0.0 + b)).collect();
        assert_eq!(bits(&out), bits(&want), "{isa:?}");
    }
}

#[test]
fn the_detected_path_is_available_and_the_best() {
    let available = Isa::available();
    assert_eq!(*available.last().unwrap(), Isa::Portable);
    if std::env::var("LAB_CPU_GEMM").is_err() {
        assert_eq!(Isa::detect(), available[0]);
    }
}

/// How far ahead the micro-kernels prefetch the weight changes the speed only: no prefetch, the
/// default distance and one past the whole weight give the same bits, at decode and prefill
/// token counts.
#[test]
fn prefetch_distance_changes_no_bits() {
    let (k, n) = (576, 200);
    let x = values(40 * k, 5);
    let w = values(n * k, 6);
    for isa in Isa::available() {
        let mut packed = PackedWeight::pack(&w, n, k, isa);
        for t in [1, 8, 40] {
            let mut outs = Vec::new();
            for ahead in [0, isa.prefetch_ahead(), 4 * n * k + 4096] {
                packed.prefetch_ahead = ahead;
                let mut out = vec![f32::NAN; t * n];
                gemm(&mut out, &x[..t * k], &packed, None, t);
                outs.push(bits(&out));
            }
            assert_eq!(
                outs[0], outs[1],
                "{isa:?}, {t} tokens: the default distance"
            );
            assert_eq!(outs[0], outs[2], "{isa:?}, {t} tokens: past the weight");
        }
    }
}

/// How the GEMM's tasks are handed to threads (one a job, the default, or rayon's own runs of
/// them) changes the speed only: every output is one task's chain whichever thread runs it.
#[test]
fn tasks_per_job_changes_no_bits() {
    let (k, n) = (300, 500); // 16 panels of 32 (or 32 of 16), the last one partial
    let x = values(140 * k, 7);
    let w = values(n * k, 8);
    for isa in Isa::available() {
        let mut packed = PackedWeight::pack(&w, n, k, isa);
        for t in [1, 8, 140] {
            let mut outs = Vec::new();
            for per_job in [1, 3, usize::MAX] {
                packed.tasks_per_job = per_job;
                let mut out = vec![f32::NAN; t * n];
                gemm(&mut out, &x[..t * k], &packed, None, t);
                outs.push(bits(&out));
            }
            assert_eq!(outs[0], outs[1], "{isa:?}, {t} tokens: 3 tasks a job");
            assert_eq!(outs[0], outs[2], "{isa:?}, {t} tokens: rayon's splitting");
        }
    }
}

/// The gate/up GEMM with SiLU·mul as its epilogue gives the bits of the GEMM followed by
/// `silu_and_mul`, on every instruction set, past the token block (128) and the register
/// tiles, `k` past the K block, with gate values large enough that `exp` leaves its main path.
#[test]
fn silu_and_mul_epilogue_is_the_gemm_then_silu_and_mul() {
    for isa in Isa::available() {
        for (t, k, panels) in [(1, 7, 1), (5, KC + 9, 2), (13, 64, 3), (130, 40, 2)] {
            let d = panels * isa.nr();
            assert!(silu_and_mul_fits(2 * d, isa));
            let x: Vec<f32> = values(t * k, (t * k) as u64)
                .iter()
                .map(|v| v * 40.0)
                .collect();
            let w = values(2 * d * k, k as u64);
            let packed = PackedWeight::pack(&w, 2 * d, k, isa);
            let mut gate_up = vec![f32::NAN; t * 2 * d];
            gemm(&mut gate_up, &x, &packed, None, t);
            let mut want = vec![f32::NAN; t * d];
            silu_and_mul(&mut want, &gate_up, t);
            let mut got = vec![f32::NAN; t * d];
            gemm_silu_and_mul(&mut got, &x, &packed, t);
            assert_eq!(bits(&got), bits(&want), "{isa:?} t={t} k={k} d={d}");
        }
    }
    // Halves of a partial panel do not fit: the backend takes the two calls for them.
    assert!(!silu_and_mul_fits(2 * 17, Isa::Portable));
}
