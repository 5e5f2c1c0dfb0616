//! The CUDA backend as one rank of a tensor-parallel group: its collectives, and the
//! vocabulary-parallel embedding.
//!
//! Two ways to sum. With NCCL (each rank of the group on a GPU of its own, libnccl present)
//! the all-reduce after each row-parallel projection is `ncclAllReduce` in place on the
//! rank's stream: the GPUs sum over NVLink while the host goes on launching, as vLLM's
//! workers do. Otherwise the collectives go through the [`Communicator`] on the host: the
//! rank's bf16 tensor is copied to the host, widened to f32, summed (or gathered) with the
//! other ranks by the communicator (the CPU ring the book teaches, or TCP between processes),
//! rounded back to bf16 and copied to the device. That is correct on any number of GPUs, one
//! included (ranks may share a GPU), and slow: every all-reduce waits for the GPU and crosses
//! PCIe twice. The logits' all-gather, once a step, goes the same way: `ncclAllGather` then a
//! kernel that puts each row's slices side by side, or through the host.
//!
//! A step that talks to the host cannot be recorded as a CUDA graph, so a backend whose group
//! sums through the host runs its steps eagerly. On NCCL nothing passes through the host, and
//! a backend built with graphs on records and replays its decode steps as on one GPU (NCCL's
//! calls can be captured), every rank recording the same steps, since every rank runs the
//! same scheduler output (`distributed::rank_worker::tp_cuda_graphs` says when the executor
//! turns them on).
//!
//! The sum adds each rank's bf16 partial result, so a TP group's output differs from one
//! GPU's in the last bits of bf16 (one GPU rounds the whole dot product once): greedy tokens
//! agree with TP = 1 until two candidates are that close.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kernels::nccl::NcclRank;

use super::cuda_backend::{kernel, CudaBackend};
use super::cuda_graph::{GraphKey, GraphRun};
use super::cuda_step::{device, CudaStepMetadata};
use super::cuda_tensor::CudaTensor;
use super::{Backend, BackendError, Result};
use crate::distributed::peer_rendezvous::PeerRendezvous;
use crate::distributed::{CommError, CommOp, CommStats, Communicator};
use kernels::cudarc::driver::CudaEvent;
use kernels::custom_all_reduce::{CustomAllReduce, PeerBuffers, PeerPtrs};

/// This rank's end of its group, and `(rank, world_size)` read without the lock.
pub struct RankComm {
    /// A mutex because the communicator's calls take `&mut` and the backend's ops `&self`;
    /// only this rank's thread ever takes it.
    comm: Mutex<Box<dyn Communicator>>,
    /// The group's NCCL communicator, when its ranks have a GPU each (a mutex for the same
    /// reason: NCCL's calls on one communicator must not overlap).
    nccl: Option<Mutex<NcclRank>>,
    /// The NCCL calls' counts: bytes as a ring sends them, and their device time, added once
    /// the step is done (the call returns before the GPUs have summed; events around each
    /// call measure it: [`super::cuda_kernel_timer`]).
    nccl_stats: Mutex<CommStats>,
    /// The NCCL calls each recorded decode graph makes: counted while the graph was recorded
    /// (the calls went through this code then), added again at each replay.
    graph_calls: Mutex<HashMap<GraphKey, CommStats>>,
    /// How long a step's GPU work may wait for the peers (the group's collective timeout).
    timeout: Duration,
    /// The one-shot all-reduce over peer memory, when the group uses it
    /// ([`CudaBackend::with_custom_all_reduce`]): this rank's buffers and every rank's addresses.
    custom: Option<Mutex<CustomPeers>>,
    pub rank: usize,
    pub world_size: usize,
}

impl RankComm {
    /// `timeout`: how long a step on NCCL may wait for its peers before it fails.
    pub fn new(comm: Box<dyn Communicator>, nccl: Option<NcclRank>, timeout: Duration) -> Self {
        let (rank, world_size) = (comm.rank(), comm.world_size());
        RankComm {
            comm: Mutex::new(comm),
            nccl: nccl.map(Mutex::new),
            nccl_stats: Mutex::new(CommStats::default()),
            graph_calls: Mutex::new(HashMap::new()),
            timeout,
            custom: None,
            rank,
            world_size,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut dyn Communicator) -> R) -> R {
        // A poisoned lock only means a panic elsewhere on this thread; the group still holds.
        let mut comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        f(comm.as_mut())
    }

    /// The NCCL calls' counts, for their device times to be added to.
    pub(super) fn nccl_stats(&self) -> &Mutex<CommStats> {
        &self.nccl_stats
    }

    /// The host communicator's counts, with the NCCL calls' added.
    pub fn stats(&self) -> CommStats {
        let mut stats = self.with(|c| c.stats().clone());
        stats.merge(&self.nccl_stats.lock().unwrap_or_else(|p| p.into_inner()));
        stats
    }

    /// The NCCL calls' counters now (to compare with after a step is recorded).
    pub(super) fn nccl_reading(&self) -> CommStats {
        self.nccl_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps the counters true across CUDA graphs: when `key`'s step was just recorded, the
    /// calls counted since `before` are the graph's; when it was replayed, they are counted
    /// again (a replay makes them on the GPU without passing through here).
    pub(super) fn count_graph_calls(&self, key: GraphKey, run: GraphRun, before: &CommStats) {
        let mut graphs = self.graph_calls.lock().unwrap_or_else(|p| p.into_inner());
        match run {
            GraphRun::Eager => {}
            GraphRun::Recorded => {
                graphs.insert(key, self.nccl_reading().since(before));
            }
            GraphRun::Replayed => {
                if let Some(calls) = graphs.get(&key) {
                    let mut stats = self.nccl_stats.lock().unwrap_or_else(|p| p.into_inner());
                    stats.merge(calls);
                }
            }
        }
    }

    /// Waits until the GPU has passed `done` (recorded after the step's last kernel), at most
    /// the group's timeout. With NCCL a plain blocking wait could never return: when a peer's
    /// process dies, this GPU's NCCL kernels wait for its data for ever, and NCCL has no
    /// timeout of its own. So the host polls the event: yielding for the first milliseconds (a
    /// decode step is one or two), then sleeping between polls; past the timeout the step
    /// fails with [`CommError::GpuTimeout`], and dropping the group aborts NCCL's kernels.
    pub(super) fn wait_for_gpu(&self, done: &CudaEvent) -> Result<()> {
        let start = Instant::now();
        loop {
            if done
                .try_is_complete()
                .map_err(|e| device("wait for the step's collectives", e))?
            {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited > self.timeout {
                let (rank, timeout) = (self.rank, self.timeout);
                return Err(CommError::GpuTimeout { rank, timeout }.into());
            }
            if waited < Duration::from_millis(20) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Whether a step's collectives run on the GPUs (NCCL or the custom all-reduce), so that a
    /// dead peer leaves this GPU waiting: the step then waits with [`Self::wait_for_gpu`].
    pub(super) fn on_device(&self) -> bool {
        self.nccl.is_some() || self.custom.is_some()
    }

    /// Whether the all-reduces run on NCCL.
    pub fn uses_nccl(&self) -> bool {
        self.nccl.is_some()
    }
}

/// This rank's end of the custom all-reduce.
struct CustomPeers {
    buffers: PeerBuffers,
    peers: PeerPtrs,
    /// Whether row-parallel projections send their output themselves (`LAB_ALL_REDUCE_PUSH`).
    push: bool,
}

/// Whether a row-parallel projection that `skinny_gemm` computes pushes its output into the
/// peers' inboxes itself, leaving the all-reduce only its receiving half
/// (`CudaBackend::row_parallel_linear`): on unless `LAB_ALL_REDUCE_PUSH=0`. Either way every
/// rank writes the same words into the same inbox slots, so ranks may even differ in it.
fn push_from_vars(var: impl Fn(&str) -> Option<String>) -> std::result::Result<bool, String> {
    match var("LAB_ALL_REDUCE_PUSH").as_deref().map(str::trim) {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(format!("LAB_ALL_REDUCE_PUSH={v}: expected 1 or 0")),
    }
}

/// The largest all-reduce the custom kernel takes, in bf16 values (8 MiB, vLLM's default): a
/// decode step's `[batch, hidden]` up to 512 × 8192. Larger ones (prefill) go to NCCL or the
/// host, where bandwidth, not latency, sets the time. Each rank's inbox holds a slot of this
/// size per rank, twice: 2 × ranks × 8 MiB of its GPU (32 MiB at TP 2).
pub const CUSTOM_ALL_REDUCE_CAPACITY: usize = 4 << 20;

impl CudaBackend {
    /// Sums this rank's group's small all-reduces with the one-shot kernel over peer memory
    /// (`kernels::custom_all_reduce`): allocates this rank's buffers and trades their addresses
    /// with the other ranks at `rendezvous` (every rank of the group must call it). Build the
    /// backend [`with_communicator`](Self::with_communicator) first.
    pub fn with_custom_all_reduce(mut self, rendezvous: &PeerRendezvous) -> Result<Self> {
        let stream = self.stream().clone();
        // The kernel waits for a peer a second longer than the host: the host reports the
        // timeout (`wait_for_gpu`), and the kernel's trap then frees the GPU.
        let Some((timeout, ranks)) = self.comm.as_ref().map(|c| (c.timeout, c.world_size)) else {
            let detail = "a custom all-reduce needs a tensor-parallel group";
            return Err(BackendError::shape("with_custom_all_reduce", detail));
        };
        let spin_limit = timeout + Duration::from_secs(1);
        let buffers = PeerBuffers::new(&stream, CUSTOM_ALL_REDUCE_CAPACITY, ranks, spin_limit)
            .map_err(kernel("custom all-reduce buffers"))?;
        // A peer may write into the inbox as soon as it has the address: EMPTY before then.
        stream
            .synchronize()
            .map_err(|e| device("custom all-reduce buffers", e))?;
        let Some(comm) = self.comm.as_mut() else {
            let detail = "a custom all-reduce needs a tensor-parallel group";
            return Err(BackendError::shape("with_custom_all_reduce", detail));
        };
        let addresses = rendezvous
            .exchange(comm.rank, buffers.address(&stream))
            .map_err(|detail| BackendError::shape("custom all-reduce", detail))?;
        let peers = PeerPtrs::new(&addresses).map_err(kernel("custom all-reduce"))?;
        let push = push_from_vars(|name| std::env::var(name).ok())
            .map_err(|detail| BackendError::shape("custom all-reduce", detail))?;
        comm.custom = Some(Mutex::new(CustomPeers {
            buffers,
            peers,
            push,
        }));
        Ok(self)
    }

    /// `x` (`[t, c]`, bf16) becomes the sum of every rank's `x`: with the custom all-reduce
    /// when the group has it and `x` fits, else on NCCL when the group has it, else through
    /// the host. Every rank takes the same path for the same call (it depends only on the
    /// size, the same on every rank).
    pub(super) fn group_all_reduce(&self, comm: &RankComm, x: &mut CudaTensor) -> Result<()> {
        let n = x.rows * x.cols;
        if let Some(custom) = &comm.custom {
            if CustomAllReduce::fits(n, CUSTOM_ALL_REDUCE_CAPACITY) {
                return self.custom_all_reduce(comm, custom, x);
            }
        }
        let span = tracing::trace_span!("kernel", op = "all_reduce");
        let nccl_op = comm.nccl.is_some().then_some(CommOp::AllReduce);
        let _span = self.collective_scope("all_reduce", nccl_op, span);
        if let Some(nccl) = &comm.nccl {
            let bytes = (x.rows * x.cols * 2) as u64;
            let nccl = nccl.lock().unwrap_or_else(|p| p.into_inner());
            let result = nccl.all_reduce_sum(&mut x.view_bf16_mut("all_reduce")?);
            let n = comm.world_size as u64;
            let mut stats = comm.nccl_stats.lock().unwrap_or_else(|p| p.into_inner());
            let sent = 2 * (n - 1) * bytes / n;
            stats.record(
                CommOp::AllReduce,
                bytes,
                sent,
                Default::default(), // the device time comes after the step
                result.is_err(),
            );
            return result.map_err(kernel("all_reduce"));
        }
        let (rows, cols) = (x.rows, x.cols);
        let mut host = self.download(x)?;
        comm.with(|c| c.all_reduce_sum(&mut host))?;
        *x = self.upload(host, rows, cols, x.dtype())?;
        Ok(())
    }

    /// `row_parallel_linear` as a projection that sends its output to every peer's inbox as
    /// it computes it (`skinny_gemm`'s pushing epilogue), then the receiving half of the custom
    /// all-reduce: the same sum, bit for bit, as `linear` then [`Self::group_all_reduce`],
    /// with one fewer trip through memory and no kernel boundary before the send. `None`,
    /// launching nothing, where the group has no custom all-reduce, the push is off, the
    /// output does not fit an inbox slot or `skinny_gemm` does not take the projection.
    pub(super) fn pushing_row_parallel_linear(
        &self,
        comm: &RankComm,
        x: &CudaTensor, // [t, in / world]
        w: &CudaTensor, // [out, in / world]
    ) -> Result<Option<CudaTensor>> {
        let Some(custom) = &comm.custom else {
            return Ok(None);
        };
        let mut custom = custom.lock().unwrap_or_else(|p| p.into_inner());
        let CustomPeers {
            buffers,
            peers,
            push,
        } = &mut *custom;
        if !*push || !CustomAllReduce::fits(x.rows * w.rows, CUSTOM_ALL_REDUCE_CAPACITY) {
            return Ok(None);
        }
        let (rank, ranks) = (comm.rank, comm.world_size);
        let target = (buffers.push_target(self.stream(), peers, rank, ranks))
            .map_err(kernel("custom all-reduce"))?;
        let Some(mut y) = self.linear_pushing(x, w, &target)? else {
            return Ok(None);
        };
        let span = tracing::trace_span!("kernel", op = "all_reduce");
        let _scope = self.collective_scope("all_reduce", Some(CommOp::AllReduce), span);
        let result = self.gpu().kernels.custom_all_reduce.receive_in_place(
            self.stream(),
            &mut y.view_bf16_mut("all_reduce")?,
            buffers,
            peers,
            rank,
            ranks,
        );
        // The bytes left with the projection's stores: the whole tensor to each peer.
        let bytes = (y.rows * y.cols * 2) as u64;
        let sent = (ranks as u64 - 1) * bytes;
        let mut stats = comm.nccl_stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.record(
            CommOp::AllReduce,
            bytes,
            sent,
            Default::default(),
            result.is_err(),
        );
        result.map_err(kernel("custom_all_reduce"))?;
        Ok(Some(y))
    }

    /// [`Self::group_all_reduce`] with the custom all-reduce, in place.
    fn custom_all_reduce(
        &self,
        comm: &RankComm,
        custom: &Mutex<CustomPeers>,
        x: &mut CudaTensor, // [t, c]
    ) -> Result<()> {
        let span = tracing::trace_span!("kernel", op = "all_reduce");
        let _scope = self.collective_scope("all_reduce", Some(CommOp::AllReduce), span);
        let mut custom = custom.lock().unwrap_or_else(|p| p.into_inner());
        let CustomPeers { buffers, peers, .. } = &mut *custom;
        let result = self.gpu().kernels.custom_all_reduce.all_reduce_in_place(
            self.stream(),
            &mut x.view_bf16_mut("all_reduce")?,
            buffers,
            peers,
            comm.rank,
            comm.world_size,
        );
        // One hop: this rank writes its whole tensor into each peer's inbox.
        let bytes = (x.rows * x.cols * 2) as u64;
        let sent = (comm.world_size as u64 - 1) * bytes;
        let mut stats = comm.nccl_stats.lock().unwrap_or_else(|p| p.into_inner());
        let failed = result.is_err();
        stats.record(CommOp::AllReduce, bytes, sent, Default::default(), failed);
        result.map_err(kernel("custom_all_reduce"))
    }

    /// Every rank's `x` `[t, c]` side by side → `[t, world·c]`, the first `cols` columns kept
    /// (the CPU backend's `all_gather_columns`): on NCCL when the group has it, else through
    /// the host.
    pub(super) fn group_all_gather_columns(
        &self,
        comm: &RankComm,
        x: CudaTensor,
        cols: usize,
    ) -> Result<CudaTensor> {
        match &comm.nccl {
            Some(nccl) => self.nccl_all_gather_columns(comm, nccl, x, cols),
            None => self.host_all_gather_columns(comm, x, cols),
        }
    }

    /// [`Self::group_all_gather_columns`] on the GPUs: NCCL gathers the ranks' `[t, c]`
    /// buffers one after another (`[world, t, c]`), and a kernel puts each row's slices side
    /// by side. Nothing passes through the host, so the step stays a CUDA graph.
    fn nccl_all_gather_columns(
        &self,
        comm: &RankComm,
        nccl: &Mutex<NcclRank>,
        x: CudaTensor,
        cols: usize,
    ) -> Result<CudaTensor> {
        let (n, rows, c) = (comm.world_size, x.rows, x.cols);
        if cols > n * c || cols + c <= n * c {
            let detail = format!("{cols} columns wanted from {n} ranks of {c}");
            return Err(BackendError::shape("all_gather_columns", detail));
        }
        let mut gathered = self.empty("all_gather", n * rows, c)?; // [n, rows, c]
        {
            let span = tracing::trace_span!("kernel", op = "all_gather");
            let _scope = self.collective_scope("all_gather", Some(CommOp::AllGather), span);
            let nccl = nccl.lock().unwrap_or_else(|p| p.into_inner());
            let result = nccl.all_gather(
                &x.view_bf16("all_gather")?,
                &mut gathered.view_bf16_mut("all_gather")?,
            );
            // NCCL's convention: the whole gathered output; a ring sends all but this rank's.
            let bytes = (n * rows * c * 2) as u64;
            let sent = bytes / n as u64 * (n as u64 - 1);
            let mut stats = comm.nccl_stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.record(
                CommOp::AllGather,
                bytes,
                sent,
                Default::default(), // the device time comes after the step
                result.is_err(),
            );
            result.map_err(kernel("all_gather"))?;
        }
        let _span = self.op_scope("gather_rank_columns");
        let mut out = self.empty("all_gather", rows, cols)?;
        self.gpu()
            .kernels
            .split_columns
            .gather_ranks(
                self.stream(),
                &mut out.view_bf16_mut("all_gather")?,
                &gathered.view_bf16("all_gather")?,
                n,
                rows,
                cols,
            )
            .map_err(kernel("gather_rank_columns"))?;
        Ok(out)
    }

    /// [`Self::group_all_gather_columns`] through the host.
    fn host_all_gather_columns(
        &self,
        comm: &RankComm,
        x: CudaTensor,
        cols: usize,
    ) -> Result<CudaTensor> {
        let (n, rows, c) = (comm.world_size, x.rows, x.cols);
        if cols > n * c {
            let detail = format!("{cols} columns wanted from {n} ranks of {c}");
            return Err(BackendError::shape("all_gather_columns", detail));
        }
        let _span = self.op_scope("all_gather");
        let mine = self.download(&x)?;
        // The communicator gathers whole buffers in rank order: [rank][row][col]. The model
        // wants each row's rank blocks side by side: [row][rank][col].
        let mut by_rank = vec![0.0; n * mine.len()];
        comm.with(|c| c.all_gather(&mine, &mut by_rank))?;
        let mut out = vec![0.0; rows * cols];
        for (i, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
            for (r, dst) in row.chunks_mut(c.max(1)).enumerate() {
                let src = r * mine.len() + i * c;
                dst.copy_from_slice(&by_rank[src..src + dst.len()]);
            }
        }
        self.upload(out, rows, cols, x.dtype())
    }

    /// This rank's rows of a vocabulary-parallel table (`[rows, hidden]`, ids `rank·rows ..`
    /// of `world·rows`): an id another rank holds gives zeros, which the all-reduce after the
    /// embedding fills in.
    pub(super) fn vocab_parallel_embedding(
        &self,
        comm: &RankComm,
        table: &CudaTensor,
        step: &CudaStepMetadata,
    ) -> Result<CudaTensor> {
        let (n, h, rows) = (step.num_tokens, table.cols, table.rows);
        let mut out = self.empty("embedding", n, h)?;
        let ids = step.bufs().input_ids().slice(0..n);
        self.gpu()
            .kernels
            .embedding
            .vocab_parallel(
                self.stream(),
                &mut out.view_bf16_mut("embedding")?,
                &ids,
                &table.view_bf16("embedding")?,
                comm.rank * rows,
                comm.world_size * rows,
                h,
            )
            .map_err(kernel("embedding"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::push_from_vars;

    #[test]
    fn the_push_follows_the_environment() {
        let read = |v: Option<&'static str>| push_from_vars(|_| v.map(String::from));
        assert_eq!(read(None), Ok(true));
        assert_eq!(read(Some("1")), Ok(true));
        assert_eq!(read(Some(" 0 ")), Ok(false));
        let err = read(Some("yes")).unwrap_err();
        assert!(err.contains("LAB_ALL_REDUCE_PUSH=yes"), "{err}");
    }
}
