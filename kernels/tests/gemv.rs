//! gemv (decode-time projections, 1 to 8 tokens) against an f64 reference, at the projection
//! sizes of the SmolLM2-135M and Llama-3.2-1B shapes and at sizes that end mid-warp and
//! mid-block (n not a multiple of the rows a block takes, k of one 16-byte chunk).
//!
//! Bound: [`BF16_BOUND`], as for `linear` (f32 sums, one bf16 rounding of each output). A row
//! skipped at the end, a chunk read twice or a missing bias gives errors near 1, and an
//! unwritten (NaN-poisoned) element NaN.
mod common;

use common::{assert_close, gpu_or_skip, linear_reference, poisoned, to_f64, Rng, BF16_BOUND};
use kernels::gemv::{Gemv, MAX_TOKENS};

#[test]
fn gemv_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (s, g) = (&gpu.stream, &gpu.kernels.gemv);
    let mut rng = Rng::fresh("gemv");
    // (n, k): SmolLM2's qkv, gate/up and down; Llama-3.2-1B's qkv and down; ragged sizes.
    for (n, k) in [
        (960, 576),
        (3072, 576),
        (576, 1536),
        (3072, 2048),
        (2048, 8192),
        (17, 8),
        (1, 24),
        (131, 40),
    ] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let bias = rng.bf16s(n, 0.5);
        let (dw, db) = (s.clone_htod(&w).unwrap(), s.clone_htod(&bias).unwrap());
        let (wf, bf) = (to_f64(&w), to_f64(&bias));
        for m in 1..=MAX_TOKENS {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let xf = to_f64(&x);
            for b in [false, true] {
                let mut out = poisoned(s, m * n);
                let dbias = db.as_view();
                g.forward(
                    s,
                    &mut out.as_view_mut(),
                    &dx.as_view(),
                    &dw.as_view(),
                    b.then_some(&dbias),
                    m,
                )
                .unwrap();
                let got = s.clone_dtoh(&out).unwrap();
                let want = linear_reference(&xf, &wf, b.then_some(&bf[..]), m, n, k);
                let what = format!(
                    "gemv [{m}, {k}] x [{n}, {k}]^T{}",
                    if b { " + bias" } else { "" }
                );
                assert_close(&what, &got, &want, BF16_BOUND);
            }
        }
    }
}

#[test]
fn gemv_refuses_what_it_cannot_do() {
    assert!(!Gemv::supports(0, 64));
    assert!(!Gemv::supports(MAX_TOKENS + 1, 64));
    assert!(!Gemv::supports(1, 12)); // not whole 16-byte chunks
    assert!(Gemv::supports(MAX_TOKENS, 8));
}
