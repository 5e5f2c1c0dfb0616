//! Plausible wrong RMSNorms:
//!
//! - `rms_norm_no_eps`: leaves out epsilon (a row of zeros becomes NaN, tiny rows blow up).
//! - `rms_norm_eps_outside_sqrt`: `x / (sqrt(mean(x²)) + eps)` instead of
//!   `x / sqrt(mean(x²) + eps)`.
//! - `rms_norm_sum_not_mean`: divides by the root of the *sum* of squares, not of the mean.
//! - `fused_add_rms_norm_no_residual`: normalizes `residual + x` into `x` but does not write
//!   the sum back into `residual`, so the next layer adds to a stale residual stream.

use super::active;

/// One row, with the root computed by `root(sum of squares, hidden size, eps)`.
fn norm_row(out: &mut [f32], x: &[f32], weight: &[f32], root: impl Fn(f32, f32) -> f32) {
    let sum_sq: f32 = x.iter().map(|v| v * v).sum();
    let inv = 1.0 / root(sum_sq, weight.len() as f32);
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (x * inv);
    }
}

pub fn rms_norm(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
) {
    let h = weight.len();
    let rows = out.chunks_mut(h).zip(x.chunks(h));
    if active("rms_norm_no_eps") {
        rows.for_each(|(o, x)| norm_row(o, x, weight, |sum, h| (sum / h).sqrt()));
    } else if active("rms_norm_eps_outside_sqrt") {
        rows.for_each(|(o, x)| norm_row(o, x, weight, |sum, h| (sum / h).sqrt() + eps));
    } else if active("rms_norm_sum_not_mean") {
        rows.for_each(|(o, x)| norm_row(o, x, weight, |sum, _| (sum + eps).sqrt()));
    } else {
        engine::ops::rms_norm::rms_norm(out, x, weight, eps)
    }
}

pub fn fused_add_rms_norm(
    x: &mut [f32],        // [num_tokens, hidden_size]; in: layer output, out: normed
    residual: &mut [f32], // [num_tokens, hidden_size]; in: residual stream, out: updated
    weight: &[f32],       // [hidden_size]
    eps: f32,
) {
    if active("fused_add_rms_norm_no_residual") {
        let sum: Vec<f32> = x.iter().zip(residual.iter()).map(|(a, b)| a + b).collect();
        engine::ops::rms_norm::rms_norm(x, &sum, weight, eps);
    } else {
        engine::ops::rms_norm::fused_add_rms_norm(x, residual, weight, eps)
    }
}
