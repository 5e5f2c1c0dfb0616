//! Plausible wrong RMSNorm kernels:
//!
//! - `rms_norm_uncoalesced`: each thread takes a contiguous chunk of the row. The numbers are
//!   right; each warp load touches up to 32 sectors where 4 would do.
//! - `rms_norm_warp_sum_only`: the sum of squares is reduced in the warp only, so each warp
//!   normalizes by its own part of the row.
//! - `rms_norm_stride_by_warp`: strides by 32 (a warp) instead of `block_dim().x`, so rows
//!   longer than a warp are counted several times over.

use super::active;
use crate::block_reduce::block_sum;
use crate::gpu::{block_dim, block_idx, thread_idx, warp_sum, Global, WARP_SIZE};
use crate::reference::rms_norm as reference;

pub async fn rms_norm_kernel(
    out: &Global<f32>,    // [num_tokens, hidden_size]
    x: &Global<f32>,      // [num_tokens, hidden_size]
    weight: &Global<f32>, // [hidden_size]
    eps: f32,
) {
    let uncoalesced = active("rms_norm_uncoalesced");
    let warp_only = active("rms_norm_warp_sum_only");
    let stride_by_warp = active("rms_norm_stride_by_warp");
    if !(uncoalesced || warp_only || stride_by_warp) {
        return reference::rms_norm_kernel(out, x, weight, eps).await;
    }
    let hidden = weight.len();
    let row = block_idx().x * hidden;
    let (t, threads) = (thread_idx().x, block_dim().x);
    // The elements this thread takes.
    let mine: Vec<usize> = if uncoalesced {
        let chunk = hidden.div_ceil(threads);
        (t * chunk..((t + 1) * chunk).min(hidden)).collect()
    } else if stride_by_warp {
        (t..hidden).step_by(WARP_SIZE).collect()
    } else {
        (t..hidden).step_by(threads).collect()
    };
    let mut sum_sq = 0.0f32;
    for &i in &mine {
        let v = x.load(row + i);
        sum_sq += v * v;
    }
    let total = if warp_only {
        warp_sum(sum_sq).await
    } else {
        block_sum(sum_sq).await
    };
    let inv_rms = 1.0 / (total / hidden as f32 + eps).sqrt();
    for &i in &mine {
        out.store(row + i, weight.load(i) * (x.load(row + i) * inv_rms));
    }
}
