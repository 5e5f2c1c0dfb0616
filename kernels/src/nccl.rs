//! NCCL all-reduce over the GPUs of one process: the collective tensor parallelism needs after
//! each row-parallel projection (`engine::distributed` has the same operation over the CPU
//! communicator, the ring the book teaches). NCCL picks its own algorithm and transport
//! (NVLink between the H200s of one machine); the bytes each GPU sends are, for a ring, the
//! same 2(N−1)/N of the buffer.
//!
//! One process, one thread, several GPUs: [`NcclGroup::new`] makes one communicator per GPU
//! (`ncclCommInitAll`), and every collective call is issued for all of them between
//! `ncclGroupStart` and `ncclGroupEnd`, as NCCL requires when one thread drives several ranks.
//! Multi-process groups (one GPU per process, the unique id passed over TCP as
//! `lab launch` bootstraps the CPU ranks) are not built yet.
//!
//! On the machines we use, set `NCCL_NVLS_ENABLE=0` before the first NCCL call (docs/gpu.md:
//! NVLink SHARP multicast is not available to our containers); `scripts/gpu-check.sh` does.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use cudarc::nccl::{result as nccl_result, Comm, ReduceOp};
use half::bf16;

use crate::error::{KernelError, Result};

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> KernelError {
    KernelError::Nccl(format!("{what}: {e:?}"))
}

/// Whether libnccl can be loaded. Makes no NCCL call, so it is safe where cudarc would panic.
pub fn nccl_available() -> Result<()> {
    // SAFETY: `is_culib_present` only tries to dlopen the library by its known names.
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(KernelError::Nccl("libnccl was not found".into()))
    }
}

/// One NCCL communicator per GPU of this process, rank `r` on `streams[r]`'s device.
pub struct NcclGroup {
    comms: Vec<Comm>,
}

impl NcclGroup {
    /// A group over the devices of `streams` (one stream per GPU, distinct GPUs).
    pub fn new(streams: Vec<Arc<CudaStream>>) -> Result<Self> {
        nccl_available()?;
        let comms = Comm::from_devices(streams).map_err(|e| nccl_error("ncclCommInitAll", e))?;
        Ok(Self { comms })
    }

    /// Number of ranks (GPUs).
    pub fn world_size(&self) -> usize {
        self.comms.len()
    }

    /// The stream rank `rank`'s collectives run on.
    pub fn stream(&self, rank: usize) -> Arc<CudaStream> {
        self.comms[rank].stream()
    }

    /// Every `bufs[r]` (rank r's buffer, on its GPU, all of one length) becomes the
    /// element-wise sum of all of them, in place. Asynchronous on each rank's stream.
    pub fn all_reduce_sum(&self, bufs: &mut [CudaSlice<bf16>]) -> Result<()> {
        if bufs.len() != self.comms.len() {
            return Err(KernelError::Nccl(format!(
                "all_reduce_sum: {} buffers for {} ranks",
                bufs.len(),
                self.comms.len()
            )));
        }
        if let Some(b) = bufs.iter().find(|b| b.len() != bufs[0].len()) {
            return Err(KernelError::Nccl(format!(
                "all_reduce_sum: buffers of {} and {} elements",
                bufs[0].len(),
                b.len()
            )));
        }
        let _span = tracing::trace_span!(
            "collective",
            op = "all_reduce",
            backend = "nccl",
            bytes = bufs[0].len() * 2,
            ranks = bufs.len()
        )
        .entered();
        nccl_result::group_start().map_err(|e| nccl_error("ncclGroupStart", e))?;
        let issued = self
            .comms
            .iter()
            .zip(bufs.iter_mut())
            .try_for_each(|(comm, buf)| {
                comm.all_reduce_in_place(buf, &ReduceOp::Sum)
                    .map(|_| ())
                    .map_err(|e| nccl_error("ncclAllReduce", e))
            });
        // End the group even when a call failed, so that NCCL is not left inside one.
        let ended = nccl_result::group_end().map_err(|e| nccl_error("ncclGroupEnd", e));
        issued?;
        ended?;
        Ok(())
    }
}
