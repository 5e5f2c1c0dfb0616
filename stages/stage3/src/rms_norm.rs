//! Exercise 3: RMSNorm (Zhang & Sennrich 2019), the normalization of Llama.
//!
//! Each token's hidden vector `x` (one row of `hidden_size` values) is scaled to unit root
//! mean square, then multiplied elementwise by a learned `weight`:
//!
//! ```text
//! out = x / sqrt(mean(x²) + eps) * weight
//! ```
//!
//! Unlike LayerNorm there is no mean subtraction and no bias: cheaper, and as good in
//! practice. A decoder layer normalizes twice (before attention, before the MLP), and always
//! right after adding a block's output to the residual stream; [`fused_add_rms_norm`] does the
//! add and the norm in one pass over memory, as vLLM's fused kernel does.
//!
//! Buffers are flat and row-major; the shape is written on each argument, as in the engine's
//! `ops` (these are the signatures of `engine::ops::rms_norm`).
//!
//! Test: `cargo test -p stage3 --test rms_norm`.

#[cfg(feature = "reference")]
pub use engine::ops::rms_norm::{fused_add_rms_norm, rms_norm};

// HINT: `hidden_size = weight.len()`; walk the rows with `chunks(h)` / `chunks_mut(h)` zipped
//   together. Per row: `mean_sq = Σ v² / h` (in f32), `inv_rms = 1 / sqrt(mean_sq + eps)`,
//   `out[i] = weight[i] * (x[i] * inv_rms)`. The tests allow float rounding differences of
//   about 1e-5 relative, so any summation order works.
// HINT (fused): per row, first `residual[i] += x[i]`, then `x = rms_norm(residual)`: the
//   normed values overwrite `x`, and `residual` keeps the sum for the next layer.
// Going further: the engine parallelizes over rows with rayon's `par_chunks_mut`.

/// `out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight`, for every token `t`.
#[cfg(not(feature = "reference"))]
pub fn rms_norm(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
) {
    todo!("stage3: rms_norm in stages/stage3/src/rms_norm.rs — per row of weight.len() values: out = x / sqrt(mean(x²) + eps) * weight")
}

/// The pre-norm residual step of a decoder layer: `residual += x`, then
/// `x = rms_norm(residual)`, row by row.
#[cfg(not(feature = "reference"))]
pub fn fused_add_rms_norm(
    x: &mut [f32],        // [num_tokens, hidden_size]; in: layer output, out: normed
    residual: &mut [f32], // [num_tokens, hidden_size]; in: residual stream, out: updated
    weight: &[f32],       // [hidden_size]
    eps: f32,
) {
    todo!("stage3: fused_add_rms_norm in stages/stage3/src/rms_norm.rs — per row: residual += x, then x = rms_norm(residual) with weight and eps")
}
