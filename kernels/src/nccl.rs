//! NCCL all-reduce over the GPUs of one process: the collective tensor parallelism needs after
//! each row-parallel projection (`engine::distributed` has the same operation over the CPU
//! communicator, the ring the book teaches). NCCL picks its own algorithm and transport
//! (NVLink between the H200s of one machine); the bytes each GPU sends are, for a ring, the
//! same 2(N−1)/N of the buffer.
//!
//! One process, one thread, several GPUs: [`NcclGroup::new`] makes one communicator per GPU
//! (`ncclCommInitAll`), and every collective call is issued for all of them between
//! `ncclGroupStart` and `ncclGroupEnd`, as NCCL requires when one thread drives several ranks.
//! One thread (or process) per GPU: each rank makes its own communicator from a shared
//! [`NcclId`] ([`NcclRank::new`], `ncclCommInitRank`), as the engine's tensor-parallel ranks
//! do; every rank must call it before any returns.
//!
//! On the machines we use, set `NCCL_NVLS_ENABLE=0` before the first NCCL call (docs/gpu.md:
//! NVLink SHARP multicast is not available to our containers); `scripts/gpu-check.sh` does.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, CudaView, CudaViewMut};
use cudarc::nccl::{result as nccl_result, Comm, Id, ReduceOp};
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

/// The id every rank of one group passes to [`NcclRank::new`] (`ncclUniqueId`: 128 bytes that
/// name the group's rendezvous); made once, by one rank or by the process that starts them.
#[derive(Debug, Clone, Copy)]
pub struct NcclId(Id);

impl NcclId {
    /// Bytes in an id.
    pub const LEN: usize = 128;

    pub fn new() -> Result<Self> {
        nccl_available()?;
        Id::new()
            .map(NcclId)
            .map_err(|e| nccl_error("ncclGetUniqueId", e))
    }

    /// The id as bytes, to send to ranks in other processes.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        // `c_char` is `i8` on x86-64 and `u8` on aarch64: the cast is a no-op on the latter.
        #[allow(clippy::unnecessary_cast)]
        self.0.internal().map(|c| c as u8)
    }

    /// An id received as bytes ([`NcclId::to_bytes`] on the rank that made it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().map_err(|_| {
            KernelError::Nccl(format!(
                "an NCCL id is {} bytes, not {}",
                Self::LEN,
                bytes.len()
            ))
        })?;
        Ok(NcclId(Id::uninit(bytes.map(|b| b as std::ffi::c_char))))
    }
}

/// One rank's NCCL communicator, on its GPU's stream: what a thread or process that drives
/// one GPU holds.
#[derive(Debug)]
pub struct NcclRank {
    comm: Comm,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it do not
// overlap (NCCL's thread-safety rule); the rank's worker owns it and is the only caller, so
// moving it to the thread that serves the rank is sound. cudarc leaves `Comm` !Send only
// because it holds a raw pointer.
unsafe impl Send for NcclRank {}

impl NcclRank {
    /// Rank `rank` of `world_size`, on `stream`'s GPU. Blocks until every rank of the group
    /// has called it with the same `id`.
    pub fn new(
        stream: Arc<CudaStream>,
        rank: usize,
        world_size: usize,
        id: NcclId,
    ) -> Result<Self> {
        nccl_available()?;
        let comm = Comm::from_rank(stream, rank, world_size, id.0).map_err(|e| {
            nccl_error(
                "ncclCommInitRank (where NVLink SHARP is unavailable, set NCCL_NVLS_ENABLE=0)",
                e,
            )
        })?;
        Ok(NcclRank { comm })
    }

    /// `buf` becomes the element-wise sum of every rank's `buf`, in place, asynchronously on
    /// the rank's stream (the kernels after it on that stream see the sum).
    pub fn all_reduce_sum(&self, buf: &mut CudaViewMut<'_, bf16>) -> Result<()> {
        let _span = tracing::trace_span!(
            "collective",
            op = "all_reduce",
            backend = "nccl",
            bytes = buf.len() * 2,
            ranks = self.comm.world_size()
        )
        .entered();
        self.comm
            .all_reduce_in_place(buf, &ReduceOp::Sum)
            .map(|_| ())
            .map_err(|e| nccl_error("ncclAllReduce", e))
    }

    /// `output` becomes every rank's `input`, one after another in rank order (rank r's at
    /// `output[r · n .. (r + 1) · n]`, n = `input.len()`), asynchronously on the rank's stream.
    pub fn all_gather(
        &self,
        input: &CudaView<'_, bf16>,         // [n]
        output: &mut CudaViewMut<'_, bf16>, // [world_size · n]
    ) -> Result<()> {
        let world = self.comm.world_size();
        if output.len() != world * input.len() {
            return Err(KernelError::Shape {
                kernel: "ncclAllGather",
                buffer: "output",
                got: output.len(),
                want: world * input.len(),
            });
        }
        let _span = tracing::trace_span!(
            "collective",
            op = "all_gather",
            backend = "nccl",
            bytes = output.len() * 2,
            ranks = world
        )
        .entered();
        self.comm
            .all_gather(input, output)
            .map(|_| ())
            .map_err(|e| nccl_error("ncclAllGather", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id crosses a process boundary as its 128 bytes (no NCCL call is needed to check it).
    #[test]
    fn an_id_round_trips_through_its_bytes() {
        let bytes: Vec<u8> = (0..NcclId::LEN).map(|i| (i * 37 % 256) as u8).collect();
        let id = NcclId::from_bytes(&bytes).unwrap();
        assert_eq!(id.to_bytes().to_vec(), bytes);
        let short = NcclId::from_bytes(&bytes[..100]).unwrap_err();
        assert!(short.to_string().contains("128 bytes, not 100"), "{short}");
    }
}
