//! linear (cuBLAS bf16 GEMM) against an f64 reference, at the projection sizes of the SmolLM2-135M
//! and Llama-3.2-1B shapes, decode (1, 7, 32 tokens) and prefill (300 tokens).
//!
//! Bound: [`BF16_BOUND`] (see `common`). The inputs are exact bf16 values and the reference sums
//! them in f64; cuBLAS sums in f32 (k ≤ 8192 terms: ~√k · 2⁻²⁴ ≈ 5e-6 relative, negligible) and
//! rounds each output to bf16 once (~1.1e-3 RMS). A transposed operand, a wrong leading
//! dimension or a missing bias gives errors near 1, and an unwritten (NaN-poisoned) element NaN.
mod common;

use common::{
    assert_close, gpu_or_skip, linear_reference as reference, poisoned, to_f64, Rng, BF16_BOUND,
};
use kernels::linear::Linear;

#[test]
fn linear_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let lin = Linear::new(s, 300).unwrap();
    let mut rng = Rng::fresh("linear");
    // (out_features n, in_features k): SmolLM2-135M's down projection and lm head (vocab 49152),
    // Llama-3.2-1B's down and gate/up projections.
    for (n, k) in [(576, 1536), (49152, 576), (2048, 8192), (8192, 2048)] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let bias = rng.bf16s(n, 0.5);
        let (dw, db) = (s.clone_htod(&w).unwrap(), s.clone_htod(&bias).unwrap());
        let (wf, bf) = (to_f64(&w), to_f64(&bias));
        for m in [1, 7, 32, 300] {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let xf = to_f64(&x);
            // Without a bias at every size, with one at a decode and the prefill size.
            let with_bias: &[bool] = if m == 7 || m == 300 {
                &[false, true]
            } else {
                &[false]
            };
            for &b in with_bias {
                let mut out = poisoned(s, m * n);
                let dbias = db.as_view();
                lin.forward(
                    &mut out.as_view_mut(),
                    &dx.as_view(),
                    &dw.as_view(),
                    b.then_some(&dbias),
                    m,
                )
                .unwrap();
                let got = s.clone_dtoh(&out).unwrap();
                let want = reference(&xf, &wf, b.then_some(&bf[..]), m, n, k);
                let what = format!(
                    "linear [{m}, {k}] x [{n}, {k}]^T{}",
                    if b { " + bias" } else { "" }
                );
                assert_close(&what, &got, &want, BF16_BOUND);
            }
        }
    }
}

#[test]
fn linear_checks_shapes() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let lin = Linear::new(s, 4).unwrap();
    let (x, w) = (poisoned(s, 2 * 8), poisoned(s, 3 * 8));
    let mut out = poisoned(s, 2 * 3);
    // weight with a row too few for out_features = 3
    let short = w.slice(..2 * 8);
    let e = lin.forward(&mut out.as_view_mut(), &x.as_view(), &short, None, 2);
    assert!(e.is_err(), "a short weight must be refused");
    // a bias for more tokens than the handle was made for
    let (x9, b) = (poisoned(s, 9 * 8), poisoned(s, 3));
    let mut out9 = poisoned(s, 9 * 3);
    let bv = b.as_view();
    let e = lin.forward(
        &mut out9.as_view_mut(),
        &x9.as_view(),
        &w.as_view(),
        Some(&bv),
        9,
    );
    assert!(e.is_err(), "a bias past max_tokens must be refused");
}
