//! Split the fused qkv projection, rotate q and k, write k and v into the paged cache: the
//! work of [`crate::split_columns`], [`crate::rotary_embedding`] and
//! [`crate::reshape_and_cache`] in one launch, with their exact results.
//! Kernel: `cuda/qkv_rotary_cache.cu`.

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::row_tiles_launch;

pub(crate) const FILE: &str = "qkv_rotary_cache.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/qkv_rotary_cache.cu");

/// The compiled fused kernel.
#[derive(Debug, Clone)]
pub struct QkvRotaryCache {
    kernel: CudaFunction,
}

/// Heads and head size of the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl QkvRotaryCache {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("qkv_rotary_cache_kernel")?,
        })
    }

    /// For every token `t`: `q_out[t]` = rotated q of row `t` of `qkv`; the rotated k and the
    /// v of that row go to row `slot_mapping[t]` of the caches (nowhere for `PADDING_SLOT`).
    /// Positions must be below the cache table's rows and slots inside the caches (the engine
    /// guarantees both; the device does not check).
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    pub fn forward(
        &self,
        stream: &Arc<CudaStream>,
        q_out: &mut CudaViewMut<'_, bf16>, // [num_tokens, num_heads, head_dim]
        key_cache: &mut CudaViewMut<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        value_cache: &mut CudaViewMut<'_, bf16>, // [num_blocks, block_size, num_kv_heads, head_dim]
        qkv: &CudaView<'_, bf16>,          // [num_tokens, (num_heads + 2 num_kv_heads) * head_dim]
        positions: &CudaView<'_, u32>,     // [num_tokens]
        slot_mapping: &CudaView<'_, u64>,  // [num_tokens]
        cos_sin_cache: &CudaView<'_, f32>, // [max_position, head_dim]
        shape: QkvShape,
    ) -> Result<()> {
        const K: &str = "qkv_rotary_cache";
        let QkvShape {
            num_heads,
            num_kv_heads,
            head_dim,
        } = shape;
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("head_dim {head_dim} must be even and positive"),
            });
        }
        let n = positions.len();
        let kv_row = num_kv_heads * head_dim;
        check_len(K, "slot_mapping", slot_mapping.len(), n)?;
        check_len(K, "q_out", q_out.len(), n * num_heads * head_dim)?;
        check_len(K, "qkv", qkv.len(), n * (num_heads * head_dim + 2 * kv_row))?;
        if kv_row == 0 || !key_cache.len().is_multiple_of(kv_row) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!(
                    "key_cache of {} is not whole rows of {kv_row}",
                    key_cache.len()
                ),
            });
        }
        check_len(K, "value_cache", value_cache.len(), key_cache.len())?;
        check_len(
            K,
            "cos_sin_cache",
            cos_sin_cache.len(),
            cos_sin_cache.len() / head_dim * head_dim,
        )?;
        if n == 0 {
            return Ok(());
        }
        let (nh, nkv, d) = (
            to_u32(K, "num_heads", num_heads)?,
            to_u32(K, "num_kv_heads", num_kv_heads)?,
            to_u32(K, "head_dim", head_dim)?,
        );
        // Work items per token: the rotary pairs, then v's row (as the kernel counts it).
        let v_units = if head_dim.is_multiple_of(8) {
            kv_row / 8
        } else {
            kv_row
        };
        let cfg = row_tiles_launch(n, (num_heads + num_kv_heads) * head_dim / 2 + v_units)?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(q_out).arg(key_cache).arg(value_cache).arg(qkv);
        launch.arg(positions).arg(slot_mapping).arg(cos_sin_cache);
        launch.arg(&nh).arg(&nkv).arg(&d);
        // SAFETY: the signature matches qkv_rotary_cache_kernel (q_out, key_cache, value_cache,
        // qkv, positions, slot_mapping, cos_sin_cache, u32 x3); q_out and qkv hold num_tokens
        // rows of their widths (checked); cache rows and table rows are read at slot_mapping[t]
        // and positions[t], which the caller keeps inside (documented).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
