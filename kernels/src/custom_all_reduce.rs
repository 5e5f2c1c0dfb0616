//! One-shot all-reduce over peer memory (vLLM's custom all-reduce, in the push form of
//! TensorRT-LLM's low-latency kernels), for the small all-reduces of a tensor-parallel decode
//! step: every rank writes its tensor straight into every peer's inbox and sums what it
//! received, one one-way hop instead of NCCL's ring. Kernel and protocol:
//! `cuda/custom_all_reduce.cu`.
//!
//! Each rank owns [`PeerBuffers`] (its inbox, where the peers write, and its call counters) on
//! its GPU; the ranks exchange their inbox addresses ([`PeerBuffers::address`]) into one
//! [`PeerPtrs`] table, the same on every rank, and every rank calls
//! [`CustomAllReduce::all_reduce`] with the same lengths in the same order (as for any
//! collective). The GPUs must reach each other's memory: one process, peer access enabled
//! between every pair ([`enable_peer_access`], which also opens the peer's memory pool: cudarc
//! allocates from the pools, which peer access alone leaves closed). Ranks may also share one
//! GPU, each on its own stream (the tests do), as long as no thread synchronizes the whole
//! device while a rank's all-reduce waits for a peer's launch.
//!
//! Measured (2026-11-30, H200s): exact with 2 and 3 ranks sharing one GPU, and with one rank
//! on each of two GPUs over NVLink.

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::result::memset_d8_async;
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
/// Threads per block and blocks per launch (`CAR_THREADS`, `CAR_MAX_BLOCKS`): every thread
/// waits for its vectors from each peer, so a launch must fit the GPU at once.
const THREADS: usize = 512;
const MAX_BLOCKS: usize = 32;

/// Every rank's inbox, by device address (the kernel's `PeerPtrs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerPtrs {
    inbox: [u64; MAX_RANKS],
}

impl PeerPtrs {
    /// The table from each rank's [`PeerBuffers::address`], in rank order.
    pub fn new(addresses: &[u64]) -> Result<Self> {
        if addresses.is_empty() || addresses.len() > MAX_RANKS {
            return Err(KernelError::Unsupported {
                kernel: "custom_all_reduce",
                what: format!("{} ranks (1 to {MAX_RANKS} are supported)", addresses.len()),
            });
        }
        let mut t = PeerPtrs::default();
        t.inbox[..addresses.len()].copy_from_slice(addresses);
        Ok(t)
    }
}

/// One rank's memory for the all-reduce, on its GPU.
#[derive(Debug)]
pub struct PeerBuffers {
    /// `[2, ranks, capacity]`: where the peers write their addends, slot s for rank s, call c
    /// into half c % 2 (the kernel's header says why two halves are enough); every word EMPTY
    /// (all bits set) until a peer writes it, and again once this rank has read it.
    inbox: CudaSlice<bf16>,
    /// `[MAX_BLOCKS]`: calls so far, per block.
    counter: CudaSlice<u32>,
    /// Values one slot holds: the largest tensor this rank can all-reduce.
    capacity: usize,
    /// Ranks of the group (slots per half).
    ranks: usize,
    /// How long a launch waits for a peer before it traps (nanoseconds).
    spin_limit_ns: u64,
}

impl PeerBuffers {
    /// Buffers for a group of `ranks` and tensors of up to `capacity` bf16 values (a multiple
    /// of 8): the inbox EMPTY, the counters zeroed. Every rank of a group must use the same
    /// capacity and group: a peer finds its slot at the same offset in every inbox. A launch
    /// that has waited `spin_limit` for a peer traps (its stream fails with a launch error)
    /// instead of spinning for ever.
    pub fn new(
        stream: &Arc<CudaStream>,
        capacity: usize,
        ranks: usize,
        spin_limit: Duration,
    ) -> Result<Self> {
        if capacity == 0 || !capacity.is_multiple_of(8) || ranks == 0 || ranks > MAX_RANKS {
            return Err(KernelError::Unsupported {
                kernel: "custom_all_reduce",
                what: format!(
                    "an inbox of {capacity} values (a positive multiple of 8) for {ranks} ranks \
                     (1 to {MAX_RANKS})"
                ),
            });
        }
        let mut inbox = stream.alloc_zeros::<bf16>(2 * ranks * capacity)?;
        let bytes = inbox.num_bytes();
        {
            // Every byte 0xff: every word EMPTY.
            let (ptr, _record) = inbox.device_ptr_mut(stream);
            // SAFETY: `ptr` is the start of `inbox`, allocated just above on `stream`, `bytes`
            // long; any bit pattern is a valid bf16.
            unsafe { memset_d8_async(ptr, 0xff, bytes, stream.cu_stream()) }?;
        }
        Ok(PeerBuffers {
            inbox,
            counter: stream.alloc_zeros(MAX_BLOCKS)?,
            capacity,
            ranks,
            spin_limit_ns: u64::try_from(spin_limit.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// Values one slot holds: the largest tensor this rank can all-reduce.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The inbox's device address, for the peers' [`PeerPtrs`].
    pub fn address(&self, stream: &Arc<CudaStream>) -> u64 {
        self.inbox.device_ptr(stream).0
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

/// Where a projection's output also goes (`SgPush` of `cuda/skinny_gemm.cu`, by value): slot
/// `rank` of every peer's inbox, in the half of the all-reduce call that follows the
/// projection. Made by [`PeerBuffers::push_target`]; the receiving half is
/// [`CustomAllReduce::receive_in_place`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PushTarget {
    peers: PeerPtrs,
    counter: u64,
    rank: u32,
    ranks: u32,
    capacity: u32,
    _pad: u32,
}

impl PushTarget {
    /// Values in one inbox slot: the most a pushing projection may write.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

impl PeerBuffers {
    /// What a pushing projection (`skinny_gemm`'s `forward_push`) needs to send into the
    /// peers' inboxes as [`CustomAllReduce::receive_in_place`] will read them: the same
    /// `peers`, `rank` and `ranks` as that call.
    pub fn push_target(
        &mut self,
        stream: &Arc<CudaStream>,
        peers: &PeerPtrs,
        rank: usize,
        ranks: usize,
    ) -> Result<PushTarget> {
        const K: &str = "custom_all_reduce";
        if rank >= ranks || ranks != self.ranks {
            return Err(unsupported(0, self.capacity, rank, ranks));
        }
        let (counter, _) = self.counter.device_ptr(stream);
        Ok(PushTarget {
            peers: *peers,
            counter,
            rank: to_u32(K, "rank", rank)?,
            ranks: to_u32(K, "ranks", ranks)?,
            capacity: to_u32(K, "capacity", self.capacity)?,
            _pad: 0,
        })
    }
}

/// The compiled kernels: the whole all-reduce, and its receiving half.
#[derive(Debug, Clone)]
pub struct CustomAllReduce {
    kernel: CudaFunction,
    receive: CudaFunction,
}

impl CustomAllReduce {
    pub(crate) fn load(module: &Arc<CudaModule>) -> Result<Self> {
        Ok(Self {
            kernel: module.load_function("custom_all_reduce_kernel")?,
            receive: module.load_function("custom_all_reduce_receive_kernel")?,
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
        self.launch(&self.kernel, stream, out, x, n, mine, peers, rank, ranks)
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
        self.launch(&self.kernel, stream, p, p, n, mine, peers, rank, ranks)
    }

    /// [`Self::all_reduce_in_place`] after a projection that already sent `buf` to every
    /// peer (`skinny_gemm`'s `forward_push` with this rank's [`PushTarget`], the kernel just
    /// before this one on the stream): only the receiving half runs. Every rank of the group
    /// must send the same way for the same call.
    pub fn receive_in_place(
        &self,
        stream: &Arc<CudaStream>,
        buf: &mut CudaViewMut<'_, bf16>, // [n]: this rank's addend, already sent; then the sum
        mine: &mut PeerBuffers,
        peers: &PeerPtrs,
        rank: usize,
        ranks: usize,
    ) -> Result<()> {
        let (n, (p, _)) = (buf.len(), buf.device_ptr_mut(stream));
        self.launch(&self.receive, stream, p, p, n, mine, peers, rank, ranks)
    }

    /// The launch: `out` and `x` are device addresses of n values; refused unless `n` fits the
    /// inbox and `rank` the group.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        kernel: &CudaFunction,
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
        if !Self::fits(n, mine.capacity()) || rank >= ranks || ranks != mine.ranks {
            return Err(unsupported(n, mine.capacity(), rank, ranks));
        }
        // Always the whole grid, whatever n: block b counts the calls of the vectors it
        // handles, so every call must give it the same ones (the kernel's header says why).
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
        let mut launch = Launch::new(stream, kernel);
        // Addresses by value: the same bits as a pointer argument (out may be x).
        launch.arg(&out).arg(&x).arg(peers).arg(&mut mine.counter);
        launch
            .arg(&args[0])
            .arg(&args[1])
            .arg(&args[2])
            .arg(&args[3])
            .arg(&mine.spin_limit_ns);
        // SAFETY: the signature matches custom_all_reduce_kernel and
        // custom_all_reduce_receive_kernel (out, x, PeerPtrs by value,
        // counter, 4 x u32, u64); out and x hold n values, n fits one slot of every rank's
        // inbox, which has a slot per rank of this call (each rank checks its own; the ranks
        // use one capacity and group and make the same calls), the counter holds MAX_BLOCKS
        // words and the grid is MAX_BLOCKS blocks.
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
