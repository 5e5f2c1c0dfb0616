//! The CPU kernels a learner may replace (Stage 3): plain functions over host slices, with the
//! signatures of [`crate::ops`], plugged into the CPU backend as function pointers. They know
//! nothing of dtypes, errors or step metadata; [`super::cpu_backend::CpuBackend`] checks shapes
//! and hands them slices.

use crate::attention::attention_metadata::AttentionMetadata;
use crate::ops;

/// `ops::rms_norm::rms_norm`'s signature.
pub type RmsNormFn = fn(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32);
/// `ops::rms_norm::fused_add_rms_norm`'s signature.
pub type FusedAddRmsNormFn = fn(x: &mut [f32], residual: &mut [f32], weight: &[f32], eps: f32);
/// `ops::rotary_embedding::rotary_embedding`'s signature.
pub type RotaryEmbeddingFn = fn(
    positions: &[usize],
    query: &mut [f32],
    key: &mut [f32],
    head_dim: usize,
    cos_sin_cache: &[f32],
);
/// `ops::paged_attention::paged_attention`'s signature.
pub type PagedAttentionFn = fn(
    out: &mut [f32],
    query: &[f32],
    key_cache: &[f32],
    value_cache: &[f32],
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    meta: &AttentionMetadata,
);

/// The kernels the CPU backend calls that a learner may replace (stage 3), as plain function
/// pointers with the signatures of [`crate::ops`]. `Default` is the engine's own.
#[derive(Debug, Clone, Copy)]
pub struct CpuKernels {
    pub rms_norm: RmsNormFn,
    pub fused_add_rms_norm: FusedAddRmsNormFn,
    pub rotary_embedding: RotaryEmbeddingFn,
    pub paged_attention: PagedAttentionFn,
}

impl Default for CpuKernels {
    fn default() -> Self {
        CpuKernels {
            rms_norm: ops::rms_norm::rms_norm,
            fused_add_rms_norm: ops::rms_norm::fused_add_rms_norm,
            rotary_embedding: ops::rotary_embedding::rotary_embedding,
            paged_attention: ops::paged_attention::paged_attention,
        }
    }
}
