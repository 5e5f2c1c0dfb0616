//! Writing this step's keys and values into the paged KV cache, the twin of
//! `engine::ops::cache_ops::reshape_and_cache`, with the same layout:
//! `[num_blocks, block_size, num_kv_heads, head_dim]` per layer, a slot being a row.
//! Kernel: `cuda/reshape_and_cache.cu`.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, Result};
use crate::row_launch;

pub(crate) const FILE: &str = "reshape_and_cache.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/reshape_and_cache.cu");

/// The slot of a padding row: its key and value are not written. A decode batch padded up to a
/// captured CUDA graph's size carries rows that belong to no sequence.
pub const PADDING_SLOT: u64 = u64::MAX;

/// The compiled cache-write kernel.
#[derive(Debug, Clone)]
pub struct ReshapeAndCache {
    kernel: CudaFunction,
}

impl ReshapeAndCache {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("reshape_and_cache_kernel")?,
        })
    }

    /// Copies token `t`'s key and value into row `slot_mapping[t]` of the caches.
    /// `row = num_kv_heads * head_dim`. Slots must be below the cache's row count: the
    /// engine's block manager guarantees it; the device does not check. Rows whose slot is
    /// [`PADDING_SLOT`] are skipped.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    pub fn reshape_and_cache(
        &self,
        stream: &Arc<CudaStream>,
        key: &CudaView<'_, bf16>,   // [num_tokens, num_kv_heads, head_dim]
        value: &CudaView<'_, bf16>, // [num_tokens, num_kv_heads, head_dim]
        key_cache: &mut CudaViewMut<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        value_cache: &mut CudaViewMut<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        slot_mapping: &CudaView<'_, u64>, // [num_tokens]
        row: usize,
    ) -> Result<()> {
        const K: &str = "reshape_and_cache";
        let n = slot_mapping.len();
        check_len(K, "key", key.len(), n * row)?;
        check_len(K, "value", value.len(), n * row)?;
        check_len(K, "value_cache", value_cache.len(), key_cache.len())?;
        check_len(
            K,
            "key_cache",
            key_cache.len(),
            key_cache.len() / row.max(1) * row,
        )?;
        if n == 0 || row == 0 {
            return Ok(());
        }
        let r = to_u32(K, "row", row)?;
        let cfg = row_launch(n, crate::vector_units(row))?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(key).arg(value).arg(key_cache).arg(value_cache);
        launch.arg(slot_mapping).arg(&r);
        // SAFETY: the signature matches reshape_and_cache_kernel (key, value, key_cache,
        // value_cache, slot_mapping, u32); key and value hold num_tokens rows (checked); each
        // write goes to row slot_mapping[t], which the caller keeps inside the cache (documented).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
