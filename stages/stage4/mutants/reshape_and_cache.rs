//! Plausible wrong reshape_and_cache kernels:
//!
//! - `reshape_and_cache_token_row`: writes token `t` to row `t` of the cache, as if the cache
//!   were a contiguous `[num_tokens, ...]` tensor (slot_mapping ignored).
//! - `reshape_and_cache_head_major`: the layout `[num_blocks, num_kv_heads, block_size,
//!   head_dim]` (heads before offsets) instead of the engine's.
//! - `reshape_and_cache_no_padding_check`: writes padding rows too, at slot `u64::MAX`.
//! - `reshape_and_cache_thread_per_head`: thread `h` copies head `h`'s `head_dim` values in a
//!   loop. The right rows; the lanes of a warp read and write `head_dim` floats apart.

use super::active;
use crate::gpu::{block_dim, block_idx, thread_idx, Global};
use crate::reference::reshape_and_cache as reference;
use crate::reshape_and_cache::PADDING_SLOT;

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
    let token_row = active("reshape_and_cache_token_row");
    let head_major = active("reshape_and_cache_head_major");
    let no_padding_check = active("reshape_and_cache_no_padding_check");
    let per_head = active("reshape_and_cache_thread_per_head");
    if !(token_row || head_major || no_padding_check || per_head) {
        return reference::reshape_and_cache_kernel(
            key,
            value,
            key_cache,
            value_cache,
            slot_mapping,
            num_kv_heads,
            head_dim,
            block_size,
        )
        .await;
    }
    let token = block_idx().x;
    let slot = slot_mapping.load(token);
    if slot == PADDING_SLOT && !no_padding_check {
        return;
    }
    let (block, offset) = (slot as usize / block_size, slot as usize % block_size);
    let row = num_kv_heads * head_dim;
    // Where element (h, d) of the token goes.
    let dst = |h: usize, d: usize| {
        if token_row {
            token * row + h * head_dim + d
        } else if head_major {
            ((block * num_kv_heads + h) * block_size + offset) * head_dim + d
        } else {
            ((block * block_size + offset) * num_kv_heads + h) * head_dim + d
        }
    };
    if per_head {
        let mut h = thread_idx().x;
        while h < num_kv_heads {
            for d in 0..head_dim {
                let src = token * row + h * head_dim + d;
                key_cache.store(dst(h, d), key.load(src));
                value_cache.store(dst(h, d), value.load(src));
            }
            h += block_dim().x;
        }
        return;
    }
    let mut i = thread_idx().x;
    while i < row {
        let (h, d) = (i / head_dim, i % head_dim);
        key_cache.store(dst(h, d), key.load(token * row + i));
        value_cache.store(dst(h, d), value.load(token * row + i));
        i += block_dim().x;
    }
}
