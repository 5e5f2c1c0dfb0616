//! One-shot all-reduce over peer memory (vLLM's custom all-reduce), for the small all-reduces
//! of a tensor-parallel decode step: every rank reads every peer's tensor straight from the
//! peer's GPU and sums it, one hop instead of NCCL's ring. Kernel and protocol:
//! `cuda/custom_all_reduce.cu`.
//!
//! Each rank owns [`PeerBuffers`] (a staging buffer, the flags its peers write, its call
//! counters) on its GPU; the ranks exchange their addresses ([`PeerBuffers::addresses`]) into
//! one [`PeerPtrs`] table, the same on every rank, and every rank calls
//! [`CustomAllReduce::all_reduce`] with the same lengths in the same order (as for any
//! collective). The GPUs must reach each other's memory: one process, peer access enabled
//! between every pair ([`enable_peer_access`], which also opens the peer's memory pool: cudarc
//! allocates from the pools, which peer access alone leaves closed). Ranks may also share one
//! GPU, each on its own stream (the tests do), as long as no thread synchronizes the whole
//! device while a rank's all-reduce waits for a peer's launch; the engine therefore uses it
//! with a GPU per rank only.
//!
//! Measured (2026-11-29, H200s): exact with 2 and 3 ranks sharing one GPU, and with one rank
//! on each of two GPUs over NVLink.

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut,
    DevicePtr, DevicePtrMut, LaunchConfig,
};
use half::bf16;

use crate::error::{check_len, to_u32, KernelError, Result};
use crate::launch::Launch;

pub(crate) const FILE: &str = "custom_all_reduce.cu";
pub(crate) const SOURCE: &str = include_str!("../cuda/custom_all_reduce.cu");

/// Most ranks in a group (`CAR_MAX_RANKS`).
pub const MAX_RANKS: usize = 8;
/// Threads per block and blocks per launch (`CAR_THREADS`, `CAR_MAX_BLOCKS`): every block
/// spins until the same block of each peer arrives, so a launch must fit the GPU at once.
const THREADS: usize = 512;
const MAX_BLOCKS: usize = 32;

/// Every rank's staging buffer and flags, by device address (the kernel's `PeerPtrs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPtrs {
    data: [u64; MAX_RANKS],
    flags: [u64; MAX_RANKS],
}

impl PeerPtrs {
    /// The table from each rank's [`PeerBuffers::addresses`], in rank order.
    pub fn new(addresses: &[(u64, u64)]) -> Result<Self> {
        if addresses.is_empty() || addresses.len() > MAX_RANKS {
            return Err(KernelError::Unsupported {
                kernel: "custom_all_reduce",
                what: format!("{} ranks (1 to {MAX_RANKS} are supported)", addresses.len()),
            });
        }
        let mut t = PeerPtrs::default();
        for (r, &(data, flags)) in addresses.iter().enumerate() {
            t.data[r] = data;
            t.flags[r] = flags;
        }
        Ok(t)
    }
}

/// One rank's memory for the all-reduce, on its GPU.
#[derive(Debug)]
pub struct PeerBuffers {
    /// `[2, capacity]`: this rank's addend, where the peers read it; call c stages into half
    /// c % 2, so that no barrier is needed at the end of a call (see the kernel's header).
    staging: CudaSlice<bf16>,
    /// `[MAX_BLOCKS, MAX_RANKS]`: "rank r staged call c in block b" from each peer.
    flags: CudaSlice<u32>,
    /// `[MAX_BLOCKS]`: calls so far, per block.
    counter: CudaSlice<u32>,
    /// How long a launch waits for a peer before it traps (nanoseconds).
    spin_limit_ns: u64,
}

impl PeerBuffers {
    /// Buffers for tensors of up to `capacity` bf16 values (a multiple of 8), flags and
    /// counters zeroed. Every rank of a group must use the same capacity: a rank finds a
    /// peer's second half at the offset of its own. A launch that has waited `spin_limit`
    /// for a peer traps (its stream fails with a launch error) instead of spinning for ever.
    pub fn new(stream: &Arc<CudaStream>, capacity: usize, spin_limit: Duration) -> Result<Self> {
        if capacity == 0 || !capacity.is_multiple_of(8) {
            return Err(KernelError::Unsupported {
                kernel: "custom_all_reduce",
                what: format!("a staging capacity of {capacity} values (a positive multiple of 8)"),
            });
        }
        Ok(PeerBuffers {
            staging: stream.alloc_zeros(2 * capacity)?,
            flags: stream.alloc_zeros(MAX_BLOCKS * MAX_RANKS)?,
            counter: stream.alloc_zeros(MAX_BLOCKS)?,
            spin_limit_ns: u64::try_from(spin_limit.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// Values one staging half holds: the largest tensor this rank can all-reduce.
    pub fn capacity(&self) -> usize {
        self.staging.len() / 2
    }

    /// (staging, flags) device addresses, for the peers' [`PeerPtrs`].
    pub fn addresses(&self, stream: &Arc<CudaStream>) -> (u64, u64) {
        let (data, _) = self.staging.device_ptr(stream);
        let (flags, _) = self.flags.device_ptr(stream);
        (data, flags)
    }
}

/// Lets `ctx`'s kernels read and write `peer`'s memory (`cuCtxEnablePeerAccess`); already
/// enabled is fine. An error when the two GPUs cannot reach each other (no NVLink or PCIe
/// peer path): then the group keeps NCCL.
pub fn enable_peer_access(ctx: &Arc<CudaContext>, peer: &Arc<CudaContext>) -> Result<()> {
    if ctx.ordinal() == peer.ordinal() {
        return Ok(());
    }
    ctx.bind_to_thread()?;
    let mut can = 0;
    // SAFETY: plain queries of two valid device ordinals, into a local.
    unsafe {
        sys::cuDeviceCanAccessPeer(&mut can, ctx.cu_device(), peer.cu_device()).result()?;
    }
    if can == 0 {
        return Err(KernelError::Unsupported {
            kernel: "custom_all_reduce",
            what: format!(
                "GPU {} cannot access GPU {}'s memory",
                ctx.ordinal(),
                peer.ordinal()
            ),
        });
    }
    // SAFETY: `ctx` is current on this thread (bound above) and `peer.cu_ctx()` is a live
    // context that `peer` keeps alive for the call.
    match unsafe { sys::cuCtxEnablePeerAccess(peer.cu_ctx(), 0) } {
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {}
        e => return Err(e.result().unwrap_err().into()),
    }
    // cudarc allocates from the device's default memory pool (`cuMemAllocAsync`), and pool
    // memory is not opened to peers by cuCtxEnablePeerAccess: the pool must grant access too.
    // (The likely cause of the illegal address on two H200s, 2026-11-29; not yet run.)
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let access = sys::CUmemAccessDesc {
        location: sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: ctx.ordinal() as i32,
        },
        flags: sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE,
    };
    // SAFETY: `pool` is a local the driver fills with `peer`'s default pool, a live handle for
    // as long as the device is; `access` is one initialized descriptor, and count is 1.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, peer.cu_device()).result()?;
        sys::cuMemPoolSetAccess(pool, &access, 1).result()?;
    }
    Ok(())
}

/// The compiled kernel.
#[derive(Debug, Clone)]
pub struct CustomAllReduce {
    kernel: CudaFunction,
}

impl CustomAllReduce {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("custom_all_reduce_kernel")?,
        })
    }

    /// Whether a tensor of `n` values can take this path with buffers of `capacity`.
    pub fn fits(n: usize, capacity: usize) -> bool {
        n > 0 && n.is_multiple_of(8) && n <= capacity
    }

    /// `out` = the sum over ranks of each rank's `x`, added in rank order in f32 (so every rank
    /// gets the same bits). Every rank of `peers` must make the same call (same `n`), each on
    /// its own stream; the launch waits on the GPU for the peers' launches.
    #[allow(clippy::too_many_arguments)]
    pub fn all_reduce(
        &self,
        stream: &Arc<CudaStream>,
        out: &mut CudaViewMut<'_, bf16>, // [n]
        x: &CudaView<'_, bf16>,          // [n]
        mine: &mut PeerBuffers,
        peers: &PeerPtrs,
        rank: usize,
        ranks: usize,
    ) -> Result<()> {
        const K: &str = "custom_all_reduce";
        let n = x.len();
        check_len(K, "out", out.len(), n)?;
        let (x, _) = x.device_ptr(stream);
        let (out, _) = out.device_ptr_mut(stream);
        self.launch(stream, out, x, n, mine, peers, rank, ranks)
    }

    /// [`Self::all_reduce`] with `buf` both the addend and the sum (each thread reads its
    /// values before it writes them).
    pub fn all_reduce_in_place(
        &self,
        stream: &Arc<CudaStream>,
        buf: &mut CudaViewMut<'_, bf16>, // [n]
        mine: &mut PeerBuffers,
        peers: &PeerPtrs,
        rank: usize,
        ranks: usize,
    ) -> Result<()> {
        let (n, (p, _)) = (buf.len(), buf.device_ptr_mut(stream));
        self.launch(stream, p, p, n, mine, peers, rank, ranks)
    }

    /// The launch: `out` and `x` are device addresses of n values; refused unless `n` fits the
    /// staging buffer and `rank` the group.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        stream: &Arc<CudaStream>,
        out: u64,
        x: u64,
        n: usize,
        mine: &mut PeerBuffers,
        peers: &PeerPtrs,
        rank: usize,
        ranks: usize,
    ) -> Result<()> {
        const K: &str = "custom_all_reduce";
        if !Self::fits(n, mine.capacity()) || rank >= ranks || ranks > MAX_RANKS {
            return Err(unsupported(n, mine.capacity(), rank, ranks));
        }
        // Always the whole grid, whatever n: the protocol relies on every block of a call
        // meeting the same block of each peer (the kernel's header says why).
        let cfg = LaunchConfig {
            grid_dim: (MAX_BLOCKS as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            to_u32(K, "rank", rank)?,
            to_u32(K, "ranks", ranks)?,
            to_u32(K, "n", n)?,
            to_u32(K, "capacity", mine.capacity())?,
        ];
        let mut launch = Launch::new(stream, &self.kernel);
        // Addresses by value: the same bits as a pointer argument (out may be x).
        launch.arg(&out).arg(&x).arg(peers).arg(&mut mine.counter);
        launch
            .arg(&args[0])
            .arg(&args[1])
            .arg(&args[2])
            .arg(&args[3])
            .arg(&mine.spin_limit_ns);
        // SAFETY: the signature matches custom_all_reduce_kernel (out, x, PeerPtrs by value,
        // counter, 4 x u32, u64); out and x hold n values, n fits one half of every rank's staging
        // buffer (each rank checks its own; the ranks use one capacity and make the same
        // calls), the flags hold MAX_BLOCKS x MAX_RANKS words and the grid is MAX_BLOCKS blocks.
        unsafe { launch.launch(cfg) }?;
        Ok(())
    }
}

fn unsupported(n: usize, capacity: usize, rank: usize, ranks: usize) -> KernelError {
    KernelError::Unsupported {
        kernel: "custom_all_reduce",
        what: format!(
            "{n} values (a multiple of 8, at most {capacity}), rank {rank} of {ranks} (at most \
             {MAX_RANKS} ranks)"
        ),
    }
}
