//! The CPU backend: f32 tensors in host memory, kernels from [`crate::ops`], threads from rayon.

use super::Backend;
use crate::attention::attention_metadata::AttentionMetadata;
use crate::ops;

/// A row-major `[rows, cols]` f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
}

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

/// Runs the model on the CPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend {
    pub kernels: CpuKernels,
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, data: Vec<f32>, rows: usize, cols: usize) -> CpuTensor {
        assert_eq!(data.len(), rows * cols, "upload: data is not {rows}x{cols}");
        CpuTensor { data, rows, cols }
    }

    fn download(&self, t: &CpuTensor) -> Vec<f32> {
        t.data.clone()
    }

    fn zeros(&self, rows: usize, cols: usize) -> CpuTensor {
        CpuTensor {
            data: vec![0.0; rows * cols],
            rows,
            cols,
        }
    }

    fn shape(&self, t: &CpuTensor) -> (usize, usize) {
        (t.rows, t.cols)
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32]) -> CpuTensor {
        let h = table.cols;
        let mut data = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            data.extend_from_slice(&table.data[id as usize * h..][..h]);
        }
        CpuTensor {
            data,
            rows: ids.len(),
            cols: h,
        }
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor, bias: Option<&CpuTensor>) -> CpuTensor {
        assert_eq!(
            x.cols, w.cols,
            "linear: x has {} columns, weight expects {}",
            x.cols, w.cols
        );
        let mut out = self.zeros(x.rows, w.rows);
        ops::linear::linear(
            &mut out.data,
            &x.data,
            &w.data,
            bias.map(|b| &b.data[..]),
            x.rows,
        );
        out
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuTensor, eps: f32) -> CpuTensor {
        let mut out = self.zeros(x.rows, x.cols);
        (self.kernels.rms_norm)(&mut out.data, &x.data, &weight.data, eps);
        out
    }

    fn fused_add_rms_norm(&self, x: &mut CpuTensor, res: &mut CpuTensor, w: &CpuTensor, eps: f32) {
        (self.kernels.fused_add_rms_norm)(&mut x.data, &mut res.data, &w.data, eps);
    }

    fn rotary_embedding(
        &self,
        positions: &[usize],
        q: &mut CpuTensor,
        k: &mut CpuTensor,
        head_dim: usize,
        cos_sin_cache: &CpuTensor,
    ) {
        (self.kernels.rotary_embedding)(
            positions,
            &mut q.data,
            &mut k.data,
            head_dim,
            &cos_sin_cache.data,
        );
    }

    fn reshape_and_cache(
        &self,
        k: &CpuTensor,
        v: &CpuTensor,
        key_cache: &mut CpuTensor,
        value_cache: &mut CpuTensor,
        slot_mapping: &[u64],
    ) {
        ops::cache_ops::reshape_and_cache(
            &k.data,
            &v.data,
            &mut key_cache.data,
            &mut value_cache.data,
            slot_mapping,
        );
    }

    fn paged_attention(
        &self,
        q: &CpuTensor,
        key_cache: &CpuTensor,
        value_cache: &CpuTensor,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        meta: &AttentionMetadata,
    ) -> CpuTensor {
        let mut out = self.zeros(q.rows, q.cols);
        (self.kernels.paged_attention)(
            &mut out.data,
            &q.data,
            &key_cache.data,
            &value_cache.data,
            num_kv_heads,
            head_dim,
            scale,
            meta,
        );
        out
    }

    fn silu_and_mul(&self, x: &CpuTensor) -> CpuTensor {
        let mut out = self.zeros(x.rows, x.cols / 2);
        ops::activation::silu_and_mul(&mut out.data, &x.data, x.rows);
        out
    }

    fn split_columns(&self, x: &CpuTensor, widths: &[usize]) -> Vec<CpuTensor> {
        let mut parts: Vec<CpuTensor> = widths.iter().map(|&w| self.zeros(x.rows, w)).collect();
        for (r, row) in x.data.chunks(x.cols).enumerate() {
            let mut start = 0;
            for (p, &w) in parts.iter_mut().zip(widths) {
                p.data[r * w..(r + 1) * w].copy_from_slice(&row[start..start + w]);
                start += w;
            }
        }
        parts
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> CpuTensor {
        let mut data = Vec::with_capacity(rows.len() * x.cols);
        for &r in rows {
            data.extend_from_slice(&x.data[r * x.cols..(r + 1) * x.cols]);
        }
        CpuTensor {
            data,
            rows: rows.len(),
            cols: x.cols,
        }
    }
}
