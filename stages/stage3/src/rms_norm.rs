//! Exercise 3: RMSNorm (Zhang & Sennrich 2019), the normalization of Llama.
//!
//! Each token's hidden vector (one row of `hidden_size` values) is scaled to unit root mean
//! square, then multiplied elementwise by a learned `weight`; `eps` keeps a row of zeros from
//! dividing by zero. Unlike LayerNorm there is no mean subtraction and no bias: cheaper, and
//! as good in practice.
//!
//! A decoder layer normalizes twice (before attention, before the MLP), and always right after
//! adding a block's output to the residual stream; [`fused_add_rms_norm`] does the add and the
//! norm in one pass over memory, as vLLM's fused kernel does, and leaves *both* results behind:
//! the updated residual stream (for the next addition) and its norm (for the next block).
//!
//! Buffers are flat and row-major; the shape is written on each argument, as in the engine's
//! `ops` (these are the signatures of `engine::ops::rms_norm`). The formula, the contract and
//! examples worked by hand are in the book's Stage 3 chapter, "RMSNorm".
//!
//! Test: `cargo test -p stage3 --test rms_norm`.

#[cfg(feature = "mutants")]
pub use crate::mutants::rms_norm::{fused_add_rms_norm, rms_norm};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::ops::rms_norm::{fused_add_rms_norm, rms_norm};

// HINT: `hidden_size` is `weight.len()`; `chunks` and `chunks_mut` walk the rows, and `zip`
//   walks two buffers together.
// HINT: where exactly does `eps` go? Try your function on a row of zeros, and on the chapter's
//   `[3, 4]` example with `eps = 0.5`.
// HINT (fused): two outputs, two buffers. After the call, what must `residual` hold, and
//   what must `x` hold? The tests check both.
// Going further: the engine parallelizes over rows with rayon's `par_chunks_mut`.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Normalizes every row (token) of `x` into `out`:
/// `out[t][i] = x[t][i] / sqrt(mean_j(x[t][j]²) + eps) · weight[i]`.
pub fn rms_norm(
    out: &mut [f32], // [num_tokens, hidden_size]
    x: &[f32],       // [num_tokens, hidden_size]
    weight: &[f32],  // [hidden_size]
    eps: f32,
) {
    todo!(
        "stage3: rms_norm in stages/stage3/src/rms_norm.rs — normalize each row of x \
         (weight.len() values) to unit root mean square, times weight"
    )
}
// ANCHOR_END: stub

#[cfg(not(feature = "reference"))]
// ANCHOR: stub_fused
/// The pre-norm residual step of a decoder layer, row by row: adds `x` into `residual`, then
/// writes the RMSNorm of the new `residual` into `x`.
pub fn fused_add_rms_norm(
    x: &mut [f32],        // [num_tokens, hidden_size]; in: layer output, out: normed
    residual: &mut [f32], // [num_tokens, hidden_size]; in: residual stream, out: updated
    weight: &[f32],       // [hidden_size]
    eps: f32,
) {
    todo!(
        "stage3: fused_add_rms_norm in stages/stage3/src/rms_norm.rs — add x into \
         residual, then write the RMSNorm of residual into x"
    )
}
// ANCHOR_END: stub_fused
