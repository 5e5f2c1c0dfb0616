//! Asking the L2 cache for a weight ahead of the kernel that reads it. Kernel:
//! `cuda/l2_prefetch.cu` (which says why).

use crate::launch::Launch;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule, CudaStream, CudaView, LaunchConfig};
use half::bf16;

use crate::error::{to_u32, Result};

pub(crate) const FILE: &str = "l2_prefetch.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/l2_prefetch.cu");

/// Bytes one request asks for (`L2_PREFETCH_CHUNK` in the kernel).
const CHUNK: usize = 65536;
/// Threads per block: each issues one request at a time.
const THREADS: u32 = 128;

/// The compiled prefetch kernel.
#[derive(Debug, Clone)]
pub struct L2Prefetch {
    kernel: CudaFunction,
}

impl L2Prefetch {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("l2_prefetch_kernel")?,
        })
    }

    /// Asks L2 for the first `bytes` of each of `w`'s `parts` equal parts (rounded down to 16
    /// bytes; at most the part). Changes no value anywhere; it only moves bytes into the cache.
    /// On a GPU older than sm_90 the kernel asks for nothing.
    pub fn prefetch(
        &self,
        stream: &Arc<CudaStream>,
        w: &CudaView<'_, bf16>, // [parts, ...]: any weight
        parts: usize,
        bytes: usize,
    ) -> Result<()> {
        const K: &str = "l2_prefetch";
        let part_bytes = w.len() * 2 / parts.max(1);
        let bytes = bytes.min(part_bytes) / 16 * 16;
        if bytes == 0 || parts == 0 {
            return Ok(());
        }
        let requests = bytes.div_ceil(CHUNK) * parts;
        let blocks = to_u32(K, "blocks", requests.div_ceil(THREADS as usize))?;
        let (part_bytes, parts, bytes) =
            (part_bytes as u64, to_u32(K, "parts", parts)?, bytes as u64);
        let mut launch = Launch::new(stream, &self.kernel);
        launch.arg(w).arg(&part_bytes).arg(&parts).arg(&bytes);
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the signature matches l2_prefetch_kernel (p, u64, u32, u64); the kernel only
        // issues prefetches of `parts` × `bytes` bytes inside `w` (bytes ≤ part_bytes, parts ×
        // part_bytes ≤ w's bytes) and reads or writes nothing.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}
