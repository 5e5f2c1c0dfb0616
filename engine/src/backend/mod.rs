//! The compute backend: where tensors live and how the model's kernels run on them.
//!
//! The Llama forward pass is written once, against this trait. The CPU backend (f32, rayon
//! threads) is the reference everyone can run; a CUDA backend implements the same operations
//! with NVRTC-compiled kernels and cuBLAS, so the model code never changes.
pub mod cpu_backend;

use crate::attention::attention_metadata::AttentionMetadata;

/// Kernels of a decoder-only transformer over 2-D tensors `[rows, cols]`.
///
/// Activations are `[num_tokens, width]`; heads are views of the width. Weights use
/// Hugging Face's layout `[out_features, in_features]`.
pub trait Backend: Send + Sync {
    /// A 2-D f32 tensor in this backend's memory.
    type Tensor: Send + Sync;

    fn name(&self) -> &'static str;
    /// Copies host data `[rows, cols]` to the backend.
    fn upload(&self, data: Vec<f32>, rows: usize, cols: usize) -> Self::Tensor;
    fn download(&self, t: &Self::Tensor) -> Vec<f32>;
    fn zeros(&self, rows: usize, cols: usize) -> Self::Tensor;
    /// `(rows, cols)`.
    fn shape(&self, t: &Self::Tensor) -> (usize, usize);

    /// Rows `ids` of `table` `[vocab, hidden]` → `[ids.len(), hidden]`.
    fn embedding(&self, table: &Self::Tensor, ids: &[u32]) -> Self::Tensor;
    /// `x · wᵀ + bias`: `[t, in] × [out, in]ᵀ → [t, out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        bias: Option<&Self::Tensor>,
    ) -> Self::Tensor;
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Tensor, eps: f32) -> Self::Tensor;
    /// `residual += x; x = rms_norm(residual)`.
    fn fused_add_rms_norm(
        &self,
        x: &mut Self::Tensor,
        residual: &mut Self::Tensor,
        weight: &Self::Tensor,
        eps: f32,
    );
    /// Rotates `q` `[t, heads·d]` and `k` `[t, kv_heads·d]` in place by position.
    fn rotary_embedding(
        &self,
        positions: &[usize],
        q: &mut Self::Tensor,
        k: &mut Self::Tensor,
        head_dim: usize,
        cos_sin_cache: &Self::Tensor,
    );
    /// Writes `k`, `v` `[t, kv_heads·d]` into cache rows `slot_mapping`.
    fn reshape_and_cache(
        &self,
        k: &Self::Tensor,
        v: &Self::Tensor,
        key_cache: &mut Self::Tensor,
        value_cache: &mut Self::Tensor,
        slot_mapping: &[u64],
    );
    /// Causal attention of `q` `[t, heads·d]` over the paged cache → `[t, heads·d]`.
    #[allow(clippy::too_many_arguments)]
    fn paged_attention(
        &self,
        q: &Self::Tensor,
        key_cache: &Self::Tensor,
        value_cache: &Self::Tensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        meta: &AttentionMetadata,
    ) -> Self::Tensor;
    /// `[t, 2d] → [t, d]`: `silu(gate) * up`.
    fn silu_and_mul(&self, x: &Self::Tensor) -> Self::Tensor;
    /// Splits columns into pieces of the given widths (q, k, v of a fused projection).
    fn split_columns(&self, x: &Self::Tensor, widths: &[usize]) -> Vec<Self::Tensor>;
    /// Rows `rows` of `x`, in that order.
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Self::Tensor;
}
