//! A tensor in GPU memory: a `[rows, cols]` matrix of bf16 (weights, activations, KV cache) or
//! f32 (the rotary table, which the kernels read in full precision).

use half::bf16;
use kernels::cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

use super::cuda_allocator::PooledSlice;
use super::{BackendError, DType, Result};

/// The elements, typed: the kernels are written per element type, so the type is checked once
/// here rather than trusted at every launch.
#[derive(Debug)]
pub enum CudaData {
    BF16(CudaSlice<bf16>),
    F32(CudaSlice<f32>),
    /// bf16 activations from the backend's caching allocator.
    Pooled(PooledSlice),
}

/// A row-major `[rows, cols]` matrix on the GPU.
#[derive(Debug)]
pub struct CudaTensor {
    pub data: CudaData,
    pub rows: usize,
    pub cols: usize,
}

impl CudaTensor {
    pub fn bf16(data: CudaSlice<bf16>, rows: usize, cols: usize) -> Self {
        CudaTensor {
            data: CudaData::BF16(data),
            rows,
            cols,
        }
    }

    /// A `[rows, cols]` bf16 tensor in a buffer of the caching allocator.
    pub fn pooled(data: PooledSlice, rows: usize, cols: usize) -> Self {
        CudaTensor {
            data: CudaData::Pooled(data),
            rows,
            cols,
        }
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            CudaData::BF16(_) | CudaData::Pooled(_) => DType::BF16,
            CudaData::F32(_) => DType::F32,
        }
    }

    fn wrong(&self, op: &'static str, want: DType) -> BackendError {
        BackendError::UnsupportedDType {
            backend: "cuda",
            op,
            dtype: self.dtype(),
            supported: want,
        }
    }

    /// The bf16 elements, or an error naming `op` if this tensor holds another type.
    pub fn view_bf16(&self, op: &'static str) -> Result<CudaView<'_, bf16>> {
        match &self.data {
            CudaData::BF16(s) => Ok(s.as_view()),
            CudaData::Pooled(p) => Ok(p.view()),
            CudaData::F32(_) => Err(self.wrong(op, DType::BF16)),
        }
    }

    /// As [`CudaTensor::view_bf16`], writable.
    pub fn view_bf16_mut(&mut self, op: &'static str) -> Result<CudaViewMut<'_, bf16>> {
        let e = self.wrong(op, DType::BF16);
        match &mut self.data {
            CudaData::BF16(s) => Ok(s.as_view_mut()),
            CudaData::Pooled(p) => Ok(p.view_mut()),
            CudaData::F32(_) => Err(e),
        }
    }

    /// The f32 elements, or an error naming `op`.
    pub fn view_f32(&self, op: &'static str) -> Result<CudaView<'_, f32>> {
        match &self.data {
            CudaData::F32(s) => Ok(s.as_view()),
            CudaData::BF16(_) | CudaData::Pooled(_) => Err(self.wrong(op, DType::F32)),
        }
    }
}
