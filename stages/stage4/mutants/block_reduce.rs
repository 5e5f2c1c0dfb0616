//! Plausible wrong block reductions:
//!
//! - `block_sum_no_leading_barrier`: no barrier before lane 0 writes its warp's slot, so a
//!   second call can overwrite a slot that a slow thread is still reading from the first (the
//!   model reports the race).
//! - `block_sum_warp_only`: reduces inside the warp and stops: each warp gets its own sum.
//! - `block_sum_no_barrier_before_read`: reads the slots right after writing its own, without
//!   waiting for the other warps to write theirs.
//! - `block_max_slot_zero`: every thread takes slot 0 (warp 0's maximum) as the block's.

use super::active;
use crate::gpu::{block_dim, shared, sync_threads, thread_idx, warp_max, warp_sum, WARP_SIZE};
use crate::reference::block_reduce as reference;

pub async fn block_sum(value: f32) -> f32 {
    let leading = !active("block_sum_no_leading_barrier");
    let between = !active("block_sum_no_barrier_before_read");
    if active("block_sum_warp_only") {
        return warp_sum(value).await;
    }
    if leading && between {
        return reference::block_sum(value).await;
    }
    let scratch = shared::<f32>(WARP_SIZE);
    let (warp, lane) = (thread_idx().x / WARP_SIZE, thread_idx().x % WARP_SIZE);
    let partial = warp_sum(value).await;
    if leading {
        sync_threads().await;
    }
    if lane == 0 {
        scratch.set(warp, partial);
    }
    if between {
        sync_threads().await;
    }
    let mut total = 0.0;
    for w in 0..block_dim().x / WARP_SIZE {
        total += scratch.get(w);
    }
    total
}

pub async fn block_max(value: f32) -> f32 {
    if !active("block_max_slot_zero") {
        return reference::block_max(value).await;
    }
    let scratch = shared::<f32>(WARP_SIZE);
    let (warp, lane) = (thread_idx().x / WARP_SIZE, thread_idx().x % WARP_SIZE);
    let partial = warp_max(value).await;
    sync_threads().await;
    if lane == 0 {
        scratch.set(warp, partial);
    }
    sync_threads().await;
    scratch.get(0)
}
