//! RMSNorm, one block per row: a strided (coalesced) pass for the sum of squares, one block
//! reduction, a strided pass to scale.

use crate::block_reduce::block_sum;
use crate::gpu::{block_dim, block_idx, thread_idx, Global};

// ANCHOR: rms_norm_kernel
/// One block per token row, any number of threads (a multiple of 32): normalizes row
/// `block_idx().x` of `x` into the same row of `out`, times `weight`.
pub async fn rms_norm_kernel(
    out: &Global<f32>,    // [num_tokens, hidden_size]
    x: &Global<f32>,      // [num_tokens, hidden_size]
    weight: &Global<f32>, // [hidden_size]
    eps: f32,
) {
    let hidden = weight.len();
    let row = block_idx().x * hidden;
    let (first, stride) = (thread_idx().x, block_dim().x);

    // Pass 1: in each pass of the loop, the lanes of a warp read neighbouring floats.
    let mut sum_sq = 0.0f32;
    let mut i = first;
    while i < hidden {
        let v = x.load(row + i);
        sum_sq += v * v;
        i += stride;
    }
    let inv_rms = 1.0 / (block_sum(sum_sq).await / hidden as f32 + eps).sqrt();

    // Pass 2: the same elements again, scaled.
    let mut i = first;
    while i < hidden {
        out.store(row + i, weight.load(i) * (x.load(row + i) * inv_rms));
        i += stride;
    }
}
// ANCHOR_END: rms_norm_kernel
