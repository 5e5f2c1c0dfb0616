//! The [`Communicator`] trait: the collectives a rank's worker calls, whatever carries them.
//!
//! One communicator belongs to one rank of a group of `world_size` ranks. Every rank of the group
//! must call the same collectives, in the same order, with the same lengths (as with NCCL or
//! `torch.distributed`): a collective is one operation that all ranks perform together, and each
//! rank's call returns once its own part is done.
//!
//! Calls return `Result<(), CommError>`. A dead or hung peer is an error after the group's
//! timeout, never a hang; a communicator that has failed refuses further calls
//! ([`CommError::Broken`]), because the ranks' message streams are no longer in step.

use std::fmt;
use std::time::Duration;

use super::comm_stats::CommStats;

/// The name of the `tracing` span every communicator call opens, with fields `op`
/// ([`CommOp::name`]), `bytes` (the tensor's), `rank` and `sent` (bytes this rank sent).
pub const COLLECTIVE_SPAN: &str = "collective";

// ANCHOR: communicator
/// The collectives of one rank, over host `f32` buffers.
///
/// Lengths count `f32` elements, as NCCL's `count` does. Each method names the NCCL call it
/// matches; a later NCCL communicator keeps this method set, these argument meanings (rank order,
/// sum, root) and the same [`CommError`] and [`CommStats`], with device buffers in place of the
/// slices: its methods take the backend's device tensors (a sibling trait with the same methods,
/// or this one with the buffer as an associated type), enqueue the NCCL call on the rank's
/// stream, time it with CUDA events, and turn a hung peer into [`CommError::Timeout`] by polling
/// `ncclCommGetAsyncError` and calling `ncclCommAbort` past the deadline. NCCL has no barrier:
/// there, [`barrier`](Communicator::barrier) is a one-element all-reduce and a stream sync.
pub trait Communicator: Send {
    /// This rank's index, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of ranks in the group.
    fn world_size(&self) -> usize;
    /// `buf` becomes the element-wise sum of every rank's `buf` (`ncclAllReduce`, `ncclSum`).
    /// Every rank ends with bit-identical values.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CommError>;
    /// `output` (`world_size × input.len()`) becomes every rank's `input`, in rank order: rank
    /// `r`'s input lands at `output[r * n..(r + 1) * n]` (`ncclAllGather`).
    fn all_gather(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), CommError>;
    /// The element-wise sum of every rank's `input` (`world_size × output.len()`), of which this
    /// rank keeps block `rank`: `output = sum[rank * n..(rank + 1) * n]` (`ncclReduceScatter`).
    fn reduce_scatter_sum(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), CommError>;
    /// Every rank's `buf` becomes rank `root`'s `buf` (`ncclBroadcast`).
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CommError>;
    /// Sends `buf` to rank `dst`, which must call [`recv`](Communicator::recv) with the same
    /// length (`ncclSend`). Messages between two ranks arrive in the order they were sent.
    fn send(&mut self, buf: &[f32], dst: usize) -> Result<(), CommError>;
    /// Fills `buf` with the next message rank `src` sent to this rank (`ncclRecv`).
    fn recv(&mut self, buf: &mut [f32], src: usize) -> Result<(), CommError>;
    /// Returns once every rank has called `barrier`.
    fn barrier(&mut self) -> Result<(), CommError>;
    /// What this rank's calls have cost so far, per kind of call.
    fn stats(&self) -> &CommStats;
}
// ANCHOR_END: communicator

/// A kind of communicator call: the key of [`CommStats`] and the `op` field of each
/// `collective` tracing span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommOp {
    AllReduce,
    AllGather,
    ReduceScatter,
    Broadcast,
    Send,
    Recv,
    Barrier,
}

impl CommOp {
    /// Every kind, in a fixed order (the order of [`CommStats`]' table).
    pub const ALL: [CommOp; 7] = [
        CommOp::AllReduce,
        CommOp::AllGather,
        CommOp::ReduceScatter,
        CommOp::Broadcast,
        CommOp::Send,
        CommOp::Recv,
        CommOp::Barrier,
    ];

    /// The name used in spans, stats tables and errors (NCCL's, in snake case).
    pub fn name(self) -> &'static str {
        match self {
            CommOp::AllReduce => "all_reduce",
            CommOp::AllGather => "all_gather",
            CommOp::ReduceScatter => "reduce_scatter",
            CommOp::Broadcast => "broadcast",
            CommOp::Send => "send",
            CommOp::Recv => "recv",
            CommOp::Barrier => "barrier",
        }
    }

    /// This kind's position in [`CommOp::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CommOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which call a message belongs to, as both ends see it: what lets a rank tell that its peer
/// issued a different call instead of waiting forever for one that will not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTag {
    /// The call's kind.
    pub op: CommOp,
    /// Its number on this rank: collectives are numbered together from 0; sends and receives
    /// are numbered per pair of ranks.
    pub seq: u64,
    /// Its length in elements, NCCL's `count` (for all-gather the input's, for reduce-scatter
    /// the output's: the length every rank must agree on).
    pub count: usize,
    /// The broadcast's root, if it is one.
    pub root: Option<usize>,
}

impl fmt::Display for CallTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} #{} of {} elements", self.op, self.seq, self.count)?;
        if let Some(root) = self.root {
            write!(f, " from root {root}")?;
        }
        Ok(())
    }
}

/// Why a communicator call failed. Each message names the op, this rank and, where there is one,
/// the peer, and says what to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommError {
    /// A receive waited past the group's timeout.
    #[error(
        "rank {rank}: {op} timed out after {timeout:?} waiting for rank {peer} \
         (is it hung, or did it never issue this {op}?)"
    )]
    Timeout {
        op: CommOp,
        rank: usize,
        peer: usize,
        timeout: Duration,
    },
    /// The peer's communicator was dropped (its thread ended or panicked), or its socket closed
    /// (its process ended or was killed).
    #[error(
        "rank {rank}: {op} failed because rank {peer} is gone \
         (its communicator was dropped or its socket closed: its thread or process ended, \
         failed or was killed)"
    )]
    PeerGone {
        op: CommOp,
        rank: usize,
        peer: usize,
    },
    /// The peer issued the same call with a different length.
    #[error(
        "rank {rank}: {op} of {ours} elements, but rank {peer} called it with {theirs}: \
         every rank must pass the same length"
    )]
    LengthMismatch {
        op: CommOp,
        rank: usize,
        peer: usize,
        ours: usize,
        theirs: usize,
    },
    /// The peer's message belongs to a different call (another op, root or position in the
    /// sequence of calls).
    #[error(
        "rank {rank} is in {ours} but rank {peer} sent {theirs}: every rank must issue the same \
         calls, in the same order"
    )]
    CallMismatch {
        rank: usize,
        peer: usize,
        ours: CallTag,
        theirs: CallTag,
    },
    /// This rank's own buffers do not fit the call (checked before anything is sent).
    #[error("rank {rank}: {op}: {problem}")]
    BadLength {
        op: CommOp,
        rank: usize,
        problem: String,
    },
    /// A peer or root that is not another rank of the group.
    #[error(
        "rank {rank}: {op} names rank {peer}, but the group's ranks are 0..{world_size} \
         (and a rank cannot send to or receive from itself)"
    )]
    BadRank {
        op: CommOp,
        rank: usize,
        peer: usize,
        world_size: usize,
    },
    /// The GPU did not finish a step whose collectives run on NCCL within the timeout: a
    /// peer's process died or hung, and NCCL's kernels on this GPU wait for it for ever (NCCL
    /// has no timeout of its own). The communicator is aborted when it is dropped.
    #[error(
        "rank {rank}: the GPU did not finish the step within {timeout:?}; its NCCL collectives \
         are waiting for a peer rank (did a rank's process die or hang?)"
    )]
    GpuTimeout { rank: usize, timeout: Duration },
    /// An earlier call on this communicator failed in the middle of its messages.
    #[error(
        "rank {rank}: {op} refused: an earlier call on this communicator failed, so the ranks' \
         messages are out of step; drop every rank's communicator and build a new group"
    )]
    Broken { op: CommOp, rank: usize },
}

impl CommError {
    /// Whether the failure left messages half exchanged, so the communicator cannot be used
    /// again. Errors in the caller's arguments are found before anything is sent and do not.
    pub fn breaks_group(&self) -> bool {
        !matches!(
            self,
            CommError::BadLength { .. } | CommError::BadRank { .. }
        )
    }
}
