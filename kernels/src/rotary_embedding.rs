//! Rotary position embedding (NeoX layout), the twin of `engine::ops::rotary_embedding`.
//! Kernel: `cuda/rotary_embedding.cu`. The cos/sin cache is the engine's f32 table, uploaded
//! once (`engine::ops::rotary_embedding::cos_sin_cache` builds it).

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::row_launch;

pub(crate) const FILE: &str = "rotary_embedding.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/rotary_embedding.cu");

/// The compiled rotary kernel.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    kernel: CudaFunction,
}

impl RotaryEmbedding {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("rotary_embedding_kernel")?,
        })
    }

    /// Rotates every head of `query` and `key` in place by its token's position.
    /// Positions must be below `cos_sin_cache.len() / head_dim` (not checked on the device).
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's signature
    pub fn rotary_embedding(
        &self,
        stream: &Arc<CudaStream>,
        positions: &CudaView<'_, u32>,     // [num_tokens]
        query: &mut CudaViewMut<'_, bf16>, // [num_tokens, num_heads, head_dim]
        key: &mut CudaViewMut<'_, bf16>,   // [num_tokens, num_kv_heads, head_dim]
        cos_sin_cache: &CudaView<'_, f32>, // [max_position, head_dim]
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        const K: &str = "rotary_embedding";
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(KernelError::Unsupported {
                kernel: K,
                what: format!("head_dim {head_dim} must be even and positive"),
            });
        }
        let n = positions.len();
        check_len(K, "query", query.len(), n * num_heads * head_dim)?;
        check_len(K, "key", key.len(), n * num_kv_heads * head_dim)?;
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
        let cfg = row_launch(n, (num_heads + num_kv_heads) * head_dim / 2)?;
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(positions).arg(query).arg(key).arg(cos_sin_cache);
        launch.arg(&nh).arg(&nkv).arg(&d);
        // SAFETY: the signature matches rotary_embedding_kernel (positions, query, key, cache,
        // u32 x3); query and key have the lengths their shapes need (checked above); the cache
        // row read is positions[t], which the caller keeps below max_position (documented).
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
