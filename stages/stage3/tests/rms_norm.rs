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

/// The chapter's example: `[3, 4]` has mean square 12.5; with `eps = 0.5` it is 13 under the
/// root.
#[test]
fn the_chapters_example() {
    let mut out = [0.0; 2];
    rms_norm(&mut out, &[3.0, 4.0], &[1.0, 1.0], 0.0);
    common::assert_close(
        "rms_norm([3, 4], eps 0)",
        &out,
        &[0.848_528, 1.131_371],
        1e-5,
    );
    rms_norm(&mut out, &[3.0, 4.0], &[1.0, 1.0], 0.5);
    common::assert_close(
        "rms_norm([3, 4], eps 0.5)",
        &out,
        &[0.832_050, 1.109_4],
        1e-5,
    );
    rms_norm(&mut out, &[3.0, 4.0], &[2.0, -1.0], 0.0);
    common::assert_close(
        "rms_norm([3, 4], weight [2, -1])",
        &out,
        &[1.697_056, -1.131_371],
        1e-5,
    );
}

/// Rows are normalized one by one, over `hidden_size` (the weight's length) values each.
#[test]
fn each_row_has_its_own_root_mean_square() {
    let mut out = [0.0; 4];
    rms_norm(&mut out, &[3.0, 4.0, 0.0, 2.0], &[1.0, 1.0], 0.0);
    let r = 2f32.sqrt();
    common::assert_close("two rows", &out, &[0.848_528, 1.131_371, 0.0, r], 1e-5);
}

/// With epsilon under the root, a row of zeros normalizes to zeros (not NaN).
#[test]
fn a_row_of_zeros_stays_zero() {
    let mut out = [f32::NAN; 3];
    rms_norm(&mut out, &[0.0; 3], &[1.0, 2.0, 3.0], 1e-5);
    assert_eq!(out, [0.0; 3], "rms_norm of a row of zeros");
}

/// The fused step leaves two results: the new residual stream and its norm.
#[test]
fn fused_add_rms_norm_writes_both_buffers() {
    let mut x = [1.0, 2.0];
    let mut residual = [2.0, 2.0];
    fused_add_rms_norm(&mut x, &mut residual, &[1.0, 1.0], 0.0);
    common::assert_close("residual after residual += x", &residual, &[3.0, 4.0], 1e-6);
    common::assert_close(
        "x after x = rms_norm(residual)",
        &x,
        &[0.848_528, 1.131_371],
        1e-5,
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
