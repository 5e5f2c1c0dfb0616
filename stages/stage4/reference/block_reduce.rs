//! Block reductions: warp shuffles inside each warp, shared memory between warps.

use crate::gpu::{block_dim, shared, sync_threads, thread_idx, warp_max, warp_sum, WARP_SIZE};

// ANCHOR: block_reduce
/// The sum of `value` over every thread of the block, returned to every thread.
pub async fn block_sum(value: f32) -> f32 {
    let scratch = shared::<f32>(WARP_SIZE); // one slot per warp: 32 warps at most
    let (warp, lane) = (thread_idx().x / WARP_SIZE, thread_idx().x % WARP_SIZE);
    let partial = warp_sum(value).await;
    // A previous call's threads may still be reading the slots: wait for all of them.
    sync_threads().await;
    if lane == 0 {
        scratch.set(warp, partial);
    }
    sync_threads().await;
    // Every thread adds the slots in the same order, so every thread gets the same bits.
    let mut total = 0.0;
    for w in 0..block_dim().x / WARP_SIZE {
        total += scratch.get(w);
    }
    total
}

/// The maximum of `value` over every thread of the block, returned to every thread.
pub async fn block_max(value: f32) -> f32 {
    let scratch = shared::<f32>(WARP_SIZE);
    let (warp, lane) = (thread_idx().x / WARP_SIZE, thread_idx().x % WARP_SIZE);
    let partial = warp_max(value).await;
    sync_threads().await;
    if lane == 0 {
        scratch.set(warp, partial);
    }
    sync_threads().await;
    let mut max = f32::NEG_INFINITY;
    for w in 0..block_dim().x / WARP_SIZE {
        max = max.max(scratch.get(w));
    }
    max
}
// ANCHOR_END: block_reduce
