//! Exercise 3: your `rms_norm` and `fused_add_rms_norm` against the engine's, then inside
//! the engine.

mod common;

use engine::backend::cpu_backend::CpuKernels;
use engine::ops::rms_norm as reference;
use engine::EngineParts;
use proptest::prelude::*;
use stage3::rms_norm::{fused_add_rms_norm, rms_norm};

/// `(x, weight)`: `[tokens, hidden]` and `[hidden]`.
fn rows() -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (1usize..5, 1usize..70).prop_flat_map(|(t, h)| {
        (
            prop::collection::vec(-10.0f32..10.0, t * h),
            prop::collection::vec(-2.0f32..2.0, h),
        )
    })
}

proptest! {
    #![proptest_config(common::proptest_config(128))]

    #[test]
    fn rms_norm_matches_the_engine((x, w) in rows(), eps in prop::sample::select(vec![1e-6f32, 1e-5, 0.1])) {
        let mut yours = vec![f32::NAN; x.len()];
        let mut engine = vec![0.0; x.len()];
        rms_norm(&mut yours, &x, &w, eps);
        reference::rms_norm(&mut engine, &x, &w, eps);
        common::assert_close("rms_norm", &yours, &engine, 1e-5);
    }

    #[test]
    fn fused_add_rms_norm_matches_the_engine((x, w) in rows(), shift in -3.0f32..3.0) {
        let residual: Vec<f32> = x.iter().rev().map(|v| v * 0.5 + shift).collect();
        let (mut x1, mut r1) = (x.clone(), residual.clone());
        let (mut x2, mut r2) = (x, residual);
        fused_add_rms_norm(&mut x1, &mut r1, &w, 1e-5);
        reference::fused_add_rms_norm(&mut x2, &mut r2, &w, 1e-5);
        common::assert_close("fused_add_rms_norm: residual", &r1, &r2, 1e-6);
        common::assert_close("fused_add_rms_norm: x", &x1, &x2, 1e-5);
    }
}

#[test]
fn a_constant_row_normalizes_to_the_weight() {
    let mut out = [0.0; 4];
    rms_norm(&mut out, &[3.0; 4], &[1.0, 2.0, -1.0, 0.5], 0.0);
    common::assert_close(
        "rms_norm of [3, 3, 3, 3]",
        &out,
        &[1.0, 2.0, -1.0, 0.5],
        1e-6,
    );
}

fn your_rms_norm() -> EngineParts {
    EngineParts {
        kernels: CpuKernels {
            rms_norm,
            fused_add_rms_norm,
            ..CpuKernels::default()
        },
        ..EngineParts::default()
    }
}

/// "With your RMSNorm, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_rms_norm_generates_the_same_tokens() {
    common::assert_same_as_engine("your rms_norm", your_rms_norm, &common::greedy());
    common::check_smollm2("your rms_norm", your_rms_norm());
}
