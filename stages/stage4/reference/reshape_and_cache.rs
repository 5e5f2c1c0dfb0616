//! reshape_and_cache, one block per token, the threads striding over its row.

use crate::gpu::{block_dim, block_idx, thread_idx, Global};
use crate::reshape_and_cache::PADDING_SLOT;

// ANCHOR: reshape_and_cache_kernel
/// One block per token: copies row `block_idx().x` of `key` and `value` into slot
/// `slot_mapping[token]` of the caches, unless that slot is [`PADDING_SLOT`].
#[allow(clippy::too_many_arguments)] // the CUDA kernel's signature
pub async fn reshape_and_cache_kernel(
    key: &Global<f32>,          // [num_tokens, num_kv_heads, head_dim]
    value: &Global<f32>,        // [num_tokens, num_kv_heads, head_dim]
    key_cache: &Global<f32>,    // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &Global<f32>,  // [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: &Global<u64>, // [num_tokens]
    num_kv_heads: usize,
    head_dim: usize,
    block_size: usize,
) {
    let token = block_idx().x;
    let slot = slot_mapping.load(token); // every thread reads it: one sector per warp
    if slot == PADDING_SLOT {
        return; // the whole block returns: no thread waits at a barrier for it
    }
    let (block, offset) = (slot as usize / block_size, slot as usize % block_size);
    let row = num_kv_heads * head_dim;
    // Source and destination rows are both contiguous, so element i of one goes to element i
    // of the other: lanes with neighbouring i touch neighbouring addresses on both sides.
    let src = token * row;
    let dst = (block * block_size + offset) * row;
    let mut i = thread_idx().x;
    while i < row {
        key_cache.store(dst + i, key.load(src + i));
        value_cache.store(dst + i, value.load(src + i));
        i += block_dim().x;
    }
}
// ANCHOR_END: reshape_and_cache_kernel
