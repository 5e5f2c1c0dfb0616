//! linear_lt (cuBLASLt bf16 GEMM, each of its ranked algorithms) against an f64 reference, at
//! decode sizes (8, 32, 128 tokens) of a TP 2 rank's o_proj and down shapes of Llama-2-7B,
//! and a shape that is a multiple of nothing: every candidate `kernel_bench --lt-algos` times
//! must compute the product, or its time says nothing.
//!
//! Bound: [`BF16_BOUND`] (see `common`), as for `linear`: exact bf16 inputs, f32 sums, one
//! rounding to bf16. A transposed operand or a wrong leading dimension gives errors near 1, an
//! unwritten (NaN-poisoned) element NaN.
mod common;

use common::{
    assert_close, gpu_or_skip, linear_reference as reference, poisoned, to_f64, Rng, BF16_BOUND,
};
use kernels::linear_lt::LinearLt;

#[test]
fn every_candidate_matches_f64_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let lt = LinearLt::new(s).unwrap();
    let mut rng = Rng::fresh("linear_lt");
    let mut checked = 0;
    for (n, k) in [(4096, 2048), (4096, 5504), (328, 200)] {
        let w = rng.bf16s(n * k, 1.0 / (k as f64).sqrt());
        let dw = s.clone_htod(&w).unwrap();
        let wf = to_f64(&w);
        for m in [8, 32, 128] {
            let x = rng.bf16s(m * k, 1.0);
            let dx = s.clone_htod(&x).unwrap();
            let want = reference(&to_f64(&x), &wf, None, m, n, k);
            let plans = lt.candidates(m, n, k, 24).unwrap();
            assert!(!plans.is_empty());
            for plan in &plans {
                let mut out = poisoned(s, m * n);
                lt.forward(plan, &mut out.as_view_mut(), &dx.as_view(), &dw.as_view())
                    .unwrap();
                let got = s.clone_dtoh(&out).unwrap();
                let what = format!("linear_lt [{m}, {k}] x [{n}, {k}]^T, {}", plan.describe());
                assert_close(&what, &got, &want, BF16_BOUND);
                checked += 1;
            }
        }
    }
    println!("linear_lt: {checked} algorithm and shape pairs agree with the f64 reference");
}

#[test]
fn a_plan_refuses_buffers_of_another_shape() {
    let Some(gpu) = gpu_or_skip() else { return };
    let s = &gpu.stream;
    let lt = LinearLt::new(s).unwrap();
    let plan = lt.candidates(8, 64, 32, 1).unwrap().remove(0);
    let (x, w) = (poisoned(s, 8 * 32), poisoned(s, 63 * 32));
    let mut out = poisoned(s, 8 * 64);
    let e = lt.forward(&plan, &mut out.as_view_mut(), &x.as_view(), &w.as_view());
    assert!(e.is_err(), "a weight a row short must be refused");
}
