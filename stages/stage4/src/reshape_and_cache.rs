//! Exercise 3: `reshape_and_cache`, the kernel that writes this step's keys and values into the
//! paged KV cache (the engine's: kernels/cuda/reshape_and_cache.cu; on the CPU,
//! engine/src/ops/cache_ops.rs).
//!
//! The projection gives each token's key as one row of `num_kv_heads · head_dim` values. Its
//! place in the cache is the slot the block manager chose, `slot_mapping[token]` (stage 3's
//! slot mapping): block `slot / block_size`, offset `slot % block_size`. With the engine's
//! layout, `[num_blocks, block_size, num_kv_heads, head_dim]`, element `(h, d)` of the token
//! goes to
//!
//! ```text
//! key_cache[((block · block_size + offset) · num_kv_heads + h) · head_dim + d]
//! ```
//!
//! A slot of [`PADDING_SLOT`] (all 64 bits set) marks a padding row: a decode batch padded up
//! to the size of a captured CUDA graph carries rows that belong to no sequence, and their keys
//! and values go nowhere. (vLLM's slot mapping is signed and pads with -1: the same 64 bits.)
//!
//! Test: `cargo test -p stage4 --test reshape_and_cache`.

#[cfg(not(feature = "reference"))]
use crate::gpu::{block_dim, block_idx, thread_idx};
use crate::gpu::{launch, Global, LaunchConfig, LaunchStats};

/// The slot of a padding row: nothing is written for it (the engine's CUDA backend's value).
pub const PADDING_SLOT: u64 = kernels::reshape_and_cache::PADDING_SLOT;

#[cfg(feature = "mutants")]
pub use crate::mutants::reshape_and_cache::reshape_and_cache_kernel;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use crate::reference::reshape_and_cache::reshape_and_cache_kernel;

// HINT: one block per token: `block_idx().x`. Read its slot first; a padding row returns.
// HINT: the key row of a token is contiguous in `key`, and so is its destination row in the
//   cache (why? look at the layout). Which thread should copy which element so that the
//   32 lanes of a warp touch neighbouring addresses, both when they load and when they store?
// Going further: the engine's kernel copies 16 bytes per lane (8 bf16 values) per instruction.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
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
    todo!(
        "stage4: reshape_and_cache_kernel in stages/stage4/src/reshape_and_cache.rs — \
         token block_idx().x: skip PADDING_SLOT, else copy its key and value rows into \
         block slot / block_size, offset slot % block_size of the caches, threads striding \
         over the row"
    )
}
// ANCHOR_END: stub

/// The cache's shape, for the host wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

// ANCHOR: host
/// The host side (given): launches one block of `threads` per token on copies of the caches,
/// copies them back, and returns what the launch moved.
pub fn reshape_and_cache(
    key: &[f32],             // [num_tokens, num_kv_heads, head_dim]
    value: &[f32],           // [num_tokens, num_kv_heads, head_dim]
    key_cache: &mut [f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &mut [f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: &[u64],    // [num_tokens]
    shape: CacheShape,
    threads: usize,
) -> LaunchStats {
    let (key, value) = (
        Global::from_slice("key", key),
        Global::from_slice("value", value),
    );
    let d_key_cache = Global::from_slice("key_cache", key_cache);
    let d_value_cache = Global::from_slice("value_cache", value_cache);
    let slots = Global::from_slice("slot_mapping", slot_mapping);
    if slot_mapping.is_empty() {
        return LaunchStats::default();
    }
    let config = LaunchConfig::new(slot_mapping.len(), threads);
    let CacheShape {
        num_kv_heads,
        head_dim,
        block_size,
    } = shape;
    let stats = launch("reshape_and_cache", config, || {
        reshape_and_cache_kernel(
            &key,
            &value,
            &d_key_cache,
            &d_value_cache,
            &slots,
            num_kv_heads,
            head_dim,
            block_size,
        )
    });
    key_cache.copy_from_slice(&d_key_cache.to_vec());
    value_cache.copy_from_slice(&d_value_cache.to_vec());
    stats
}
// ANCHOR_END: host
