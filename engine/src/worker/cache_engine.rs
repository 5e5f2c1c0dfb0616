//! Allocates the paged KV cache (vLLM's `CacheEngine`) and sizes it from a memory budget.

use crate::backend::{Backend, Result};
use crate::config::ModelConfig;

/// Per layer, a key cache and a value cache, each `[num_blocks · block_size, kv_heads · head_dim]`
/// (that is `[num_blocks, block_size, num_kv_heads, head_dim]` flattened to rows of slots).
pub struct KvCache<B: Backend> {
    layers: Vec<(B::Tensor, B::Tensor)>,
    pub num_blocks: usize,
    pub block_size: usize,
}

impl<B: Backend> KvCache<B> {
    /// Allocates every layer's caches in the backend's [`Backend::default_dtype`]; fails if
    /// they do not fit.
    pub fn new(
        backend: &B,
        config: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self> {
        let rows = num_blocks * block_size;
        let cols = config.num_key_value_heads * config.head_dim;
        let dtype = backend.default_dtype();
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                Ok((
                    backend.zeros(rows, cols, dtype)?,
                    backend.zeros(rows, cols, dtype)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            num_blocks,
            block_size,
        })
    }

    /// Layer `i`'s (key cache, value cache).
    pub fn layer_mut(&mut self, i: usize) -> (&mut B::Tensor, &mut B::Tensor) {
        let (k, v) = &mut self.layers[i];
        (k, v)
    }
}

// ANCHOR: kv_bytes_per_block
/// Bytes one KV block takes over all layers: keys and values (2) × layers × block_size ×
/// kv_heads × head_dim × bytes per element.
pub fn kv_cache_bytes_per_block(
    config: &ModelConfig,
    block_size: usize,
    dtype_bytes: usize,
) -> usize {
    2 * config.num_hidden_layers
        * block_size
        * config.num_key_value_heads
        * config.head_dim
        * dtype_bytes
}
// ANCHOR_END: kv_bytes_per_block

/// Blocks that fit a memory budget (at least 1).
pub fn num_blocks_for_budget(
    config: &ModelConfig,
    block_size: usize,
    budget_bytes: usize,
) -> usize {
    (budget_bytes / kv_cache_bytes_per_block(config, block_size, 4)).max(1)
}
