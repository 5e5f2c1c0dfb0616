//! Host memory for swapped-out KV blocks, and the direction of a copy
//! ([`super::Backend::swap_blocks`]).
//!
//! A swapped block must come back bit for bit, so the host keeps the device cache's own
//! element type (bf16 for a GPU's cache, f32 for the CPU's): no conversion either way.

use half::bf16;
use half::vec::HalfBitsVecExt;

use super::DType;

/// The elements of a host swap buffer, in the device cache's dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
}

// ANCHOR: host_kv_blocks
/// One layer's key (or value) swap space in host memory: `[num_blocks · block_size, cols]`,
/// the device cache's row layout, so block `b` is rows `b·block_size .. (b+1)·block_size`.
#[derive(Debug, Clone, PartialEq)]
pub struct HostKvBlocks {
    pub data: HostData,
    pub num_blocks: usize,
    pub block_size: usize,
    /// `kv_heads · head_dim`.
    pub cols: usize,
}
// ANCHOR_END: host_kv_blocks

impl HostKvBlocks {
    /// Zeroed host blocks of `dtype` (an F16 cache is kept as f32 here: no backend has one).
    pub fn zeros(dtype: DType, num_blocks: usize, block_size: usize, cols: usize) -> Self {
        let n = num_blocks * block_size * cols;
        let data = match dtype {
            // Zeroed u16 bits come from the allocator already zero (no pass over gigabytes of
            // swap space at start-up), then are reinterpreted in place as bf16 zeros.
            DType::BF16 => HostData::BF16(vec![0u16; n].reinterpret_into()),
            DType::F32 | DType::F16 => HostData::F32(vec![0.0; n]),
        };
        HostKvBlocks {
            data,
            num_blocks,
            block_size,
            cols,
        }
    }

    /// Elements in one block: `block_size · cols`.
    pub fn block_len(&self) -> usize {
        self.block_size * self.cols
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::BF16(_) => DType::BF16,
        }
    }
}

/// Which way [`super::Backend::swap_blocks`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapDirection {
    /// Device cache → host (preemption by swap).
    Out,
    /// Host → device cache (resuming).
    In,
}

/// Checks a [`super::Backend::swap_blocks`] call before any copy: the host's width and dtype
/// are the cache's, and every block of `mapping` is inside its side. `cache_rows`, `cols`:
/// the device cache's shape.
pub fn check_swap(
    backend: &'static str,
    cache_rows: usize,
    cols: usize,
    cache_dtype: DType,
    host: &HostKvBlocks,
    mapping: &[(u32, u32)],
) -> super::Result<()> {
    let shape = |detail: String| Err(super::BackendError::shape("swap_blocks", detail));
    if host.cols != cols {
        return shape(format!(
            "host blocks are {} wide, the cache {cols}",
            host.cols
        ));
    }
    if host.dtype() != cache_dtype {
        return Err(super::BackendError::UnsupportedDType {
            backend,
            op: "swap_blocks",
            dtype: host.dtype(),
            supported: cache_dtype,
        });
    }
    let device_blocks = cache_rows / host.block_size.max(1);
    for &(d, h) in mapping {
        if d as usize >= device_blocks || h as usize >= host.num_blocks {
            return shape(format!(
                "block pair ({d}, {h}) outside {device_blocks} device and {} host blocks",
                host.num_blocks
            ));
        }
    }
    Ok(())
}

// ANCHOR: cuda_swap_blocks
/// The CUDA backend's [`super::Backend::swap_blocks`]: one device↔host copy per block on
/// `stream` (a block's rows are contiguous in both layouts), then a wait for the stream, so
/// the copies are done when it returns (the host buffer is pageable memory: the driver stages
/// it, and a copy out is complete only once the stream has reached it).
pub fn cuda_swap_blocks(
    stream: &std::sync::Arc<kernels::cudarc::driver::CudaStream>,
    cache: &mut super::cuda_tensor::CudaTensor,
    host: &mut HostKvBlocks,
    mapping: &[(u32, u32)],
    direction: SwapDirection,
) -> super::Result<()> {
    let _span = tracing::trace_span!("kernel", op = "swap_blocks").entered();
    check_swap("cuda", cache.rows, cache.cols, cache.dtype(), host, mapping)?;
    let n = host.block_len();
    let HostData::BF16(host_data) = &mut host.data else {
        unreachable!("check_swap compared the dtypes, and the cache is bf16")
    };
    let mut view = cache.view_bf16_mut("swap_blocks")?;
    let err = |e| super::cuda_step::device("swap_blocks", e);
    for &(device, block) in mapping {
        let d = device as usize * n..(device as usize + 1) * n;
        let h = block as usize * n..(block as usize + 1) * n;
        match direction {
            SwapDirection::Out => stream.memcpy_dtoh(&view.slice(d), &mut host_data[h]),
            SwapDirection::In => stream.memcpy_htod(&host_data[h], &mut view.slice_mut(d)),
        }
        .map_err(err)?;
    }
    stream.synchronize().map_err(err)
}
// ANCHOR_END: cuda_swap_blocks
