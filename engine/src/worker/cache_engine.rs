//! Allocates the paged KV cache (vLLM's `CacheEngine`) and sizes it from a memory budget.

use crate::backend::{Backend, HostKvBlocks, Result, SwapDirection};
use crate::config::ModelConfig;
use crate::core::swap_space::SwapOps;

/// Per layer, a key cache and a value cache, each `[num_blocks · block_size, kv_heads · head_dim]`
/// (that is `[num_blocks, block_size, num_kv_heads, head_dim]` flattened to rows of slots).
pub struct KvCache<B: Backend> {
    layers: Vec<(B::Tensor, B::Tensor)>,
    pub num_blocks: usize,
    pub block_size: usize,
    /// Per layer, the host swap space's keys and values (vLLM's `cpu_cache`); empty until
    /// [`KvCache::allocate_swap_space`].
    swap: Vec<(HostKvBlocks, HostKvBlocks)>,
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
            swap: Vec::new(),
        })
    }

    /// Allocates a host swap space of `num_blocks` blocks per layer, in the cache's dtype.
    pub fn allocate_swap_space(&mut self, backend: &B, num_blocks: usize) {
        let dtype = backend.default_dtype();
        self.swap = self
            .layers
            .iter()
            .map(|(k, _)| {
                let cols = backend.shape(k).1;
                let host = HostKvBlocks::zeros(dtype, num_blocks, self.block_size, cols);
                (host.clone(), host)
            })
            .collect();
    }

    // ANCHOR: swap
    /// Makes a step's block copies, every layer's keys and values: first the swap-outs,
    /// then the swap-ins (the scheduler never asks for both in one step, so the order only
    /// matters as a rule: device blocks freed by a swap-out are read before anyone reuses them).
    pub fn swap(&mut self, backend: &B, ops: &SwapOps) -> Result<()> {
        let _span = tracing::debug_span!(
            "swap_blocks",
            out = ops.swap_out.len(),
            r#in = ops.swap_in.len()
        )
        .entered();
        let pairs = |copies: &[crate::core::swap_space::BlockCopy]| -> Vec<(u32, u32)> {
            copies.iter().map(|c| (c.device.0, c.host.0)).collect()
        };
        for (copies, direction) in [
            (pairs(&ops.swap_out), SwapDirection::Out),
            (pairs(&ops.swap_in), SwapDirection::In),
        ] {
            if copies.is_empty() {
                continue;
            }
            if self.swap.is_empty() {
                return Err(crate::backend::BackendError::shape(
                    "swap_blocks",
                    "this cache has no swap space (--swap-space 0)",
                ));
            }
            for ((k, v), (hk, hv)) in self.layers.iter_mut().zip(&mut self.swap) {
                backend.swap_blocks(k, hk, &copies, direction)?;
                backend.swap_blocks(v, hv, &copies, direction)?;
            }
        }
        Ok(())
    }
    // ANCHOR_END: swap

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
