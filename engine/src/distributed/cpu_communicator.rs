//! [`CpuCommunicator`]: a group of ranks as threads of one process, talking over channels.
//!
//! [`CpuCommunicator::group`] builds one communicator per rank, joined pairwise by
//! `std::sync::mpsc` channels (a full mesh: one channel for each ordered pair of ranks, so
//! messages between two ranks arrive in the order they were sent; `messages` sends and checks
//! them). Each communicator is moved into its rank's thread. All-reduce, all-gather and
//! reduce-scatter use the ring ([`super::ring`]); a broadcast passes the buffer along the ring
//! from the root; a barrier is one empty message from every rank to every other rank.
//!
//! Failure rules:
//! - Every message carries a [`CallTag`] (op, sequence number, length, root). A receiver checks it
//!   against its own call, so ranks that issue different calls, or the same call with different
//!   lengths, fail with [`CommError::CallMismatch`] or [`CommError::LengthMismatch`] rather than
//!   wait for each other.
//! - A receive that waits longer than the group's timeout fails with [`CommError::Timeout`],
//!   naming the peer.
//! - Channels are unbounded, so a send never blocks; sending to, or waiting on, a rank whose
//!   communicator was dropped (its thread ended or panicked) fails at once with
//!   [`CommError::PeerGone`]. A rank that fails drops its communicator when its thread ends, so
//!   its neighbours fail at once too: one dead rank ends the whole group quickly.
//!
//! The collectives only post `Message`s to an `Outbox` per peer and take them from a
//! channel per peer. In one process the outbox is the channel's sender; between processes
//! ([`super::tcp_communicator`]) it writes to a socket, and a reader thread per socket feeds
//! the same kind of channel. So the ring, the tags, the timeouts and the [`CommStats`] are one
//! code path whatever carries the bytes.

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::comm_stats::CommStats;
use super::communicator::{CallTag, CommError, CommOp, Communicator, COLLECTIVE_SPAN};
use super::ring::ring_chunk;
pub(in crate::distributed) use messages::{Message, Outbox, PostError};

mod messages;

/// The size of one element, for byte counts.
const F32_BYTES: usize = std::mem::size_of::<f32>();

/// One rank's end of an in-process group (see the [module docs](self)).
#[derive(Debug)]
pub struct CpuCommunicator {
    rank: usize,
    world_size: usize,
    timeout: Duration,
    /// `to[peer]`: where this rank's messages to `peer` go (`None` at `rank`).
    to: Vec<Option<Box<dyn Outbox>>>,
    /// `from[peer]`: the messages `peer` sent to this rank, in order (`None` at `rank`).
    from: Vec<Option<Receiver<Message>>>,
    /// Collectives issued so far: the next one's sequence number.
    collectives: u64,
    /// `sends[peer]` / `recvs[peer]`: point-to-point messages sent to / received from `peer`.
    sends: Vec<u64>,
    recvs: Vec<u64>,
    /// Payload bytes sent by the call in progress.
    sent_in_call: u64,
    /// Set when a call failed halfway: the message streams are out of step from then on.
    broken: bool,
    stats: CommStats,
}

impl CpuCommunicator {
    /// A group of `world_size` ranks: element `r` is rank `r`'s communicator, to be moved into
    /// that rank's thread. A receive that waits longer than `timeout` fails. `world_size` 0
    /// gives no communicators.
    pub fn group(world_size: usize, timeout: Duration) -> Vec<CpuCommunicator> {
        let n = world_size;
        let mut to: Vec<Vec<Option<Box<dyn Outbox>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut from: Vec<Vec<Option<Receiver<Message>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for src in 0..n {
            for dst in (0..n).filter(|&dst| dst != src) {
                let (tx, rx) = mpsc::channel::<Message>();
                to[src][dst] = Some(Box::new(tx));
                from[dst][src] = Some(rx);
            }
        }
        to.into_iter()
            .zip(from)
            .enumerate()
            .map(|(rank, (to, from))| CpuCommunicator::from_links(rank, n, timeout, to, from))
            .collect()
    }

    /// Rank `rank`'s end of a group whose messages to peer `p` go to `to[p]` and whose
    /// messages from `p` arrive on `from[p]` (both `None` at `rank`): the constructor every
    /// transport shares.
    pub(in crate::distributed) fn from_links(
        rank: usize,
        world_size: usize,
        timeout: Duration,
        to: Vec<Option<Box<dyn Outbox>>>,
        from: Vec<Option<Receiver<Message>>>,
    ) -> Self {
        CpuCommunicator {
            rank,
            world_size,
            timeout,
            to,
            from,
            collectives: 0,
            sends: vec![0; world_size],
            recvs: vec![0; world_size],
            sent_in_call: 0,
            broken: false,
            stats: CommStats::default(),
        }
    }

    /// The group's receive timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one call: its span, its stats, and the rule that a failure midway breaks the
    /// communicator. `elements` is the call's tensor size for [`CommStats`].
    fn call(
        &mut self,
        op: CommOp,
        elements: usize,
        body: impl FnOnce(&mut Self) -> Result<(), CommError>,
    ) -> Result<(), CommError> {
        let tensor_bytes = (elements * F32_BYTES) as u64;
        let span = tracing::trace_span!(
            COLLECTIVE_SPAN,
            op = op.name(),
            bytes = tensor_bytes,
            rank = self.rank,
            sent = tracing::field::Empty
        );
        let _entered = span.enter();
        let start = Instant::now();
        self.sent_in_call = 0;
        let result = if self.broken {
            Err(CommError::Broken {
                op,
                rank: self.rank,
            })
        } else {
            body(self)
        };
        if result.as_ref().is_err_and(CommError::breaks_group) {
            self.broken = true;
        }
        span.record("sent", self.sent_in_call);
        let failed = result.is_err();
        self.stats
            .record(op, tensor_bytes, self.sent_in_call, start.elapsed(), failed);
        result
    }

    /// The tag of the next collective, which takes its sequence number.
    fn next_collective(&mut self, op: CommOp, count: usize, root: Option<usize>) -> CallTag {
        let seq = self.collectives;
        self.collectives += 1;
        CallTag {
            op,
            seq,
            count,
            root,
        }
    }

    fn bad_rank(&self, op: CommOp, peer: usize) -> CommError {
        CommError::BadRank {
            op,
            rank: self.rank,
            peer,
            world_size: self.world_size,
        }
    }

    /// Checks that `peer` is another rank of the group.
    fn check_peer(&self, op: CommOp, peer: usize) -> Result<(), CommError> {
        if peer < self.world_size && peer != self.rank {
            Ok(())
        } else {
            Err(self.bad_rank(op, peer))
        }
    }
}

impl Communicator for CpuCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    // ANCHOR: all_reduce
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CommError> {
        self.call(CommOp::AllReduce, buf.len(), |c| {
            let tag = c.next_collective(CommOp::AllReduce, buf.len(), None);
            let (len, n) = (buf.len(), c.world_size);
            c.ring_reduce_scatter(buf, |i| ring_chunk(len, n, i), tag)?;
            c.ring_all_gather(buf, |i| ring_chunk(len, n, i), tag)
        })
    }
    // ANCHOR_END: all_reduce

    fn all_gather(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), CommError> {
        self.call(CommOp::AllGather, output.len(), |c| {
            let (count, n) = (input.len(), c.world_size);
            if output.len() != n * count {
                let problem = format!(
                    "the output has {} elements, but gathering {count} from each of {n} ranks \
                     needs {}",
                    output.len(),
                    n * count
                );
                return Err(CommError::BadLength {
                    op: CommOp::AllGather,
                    rank: c.rank,
                    problem,
                });
            }
            let tag = c.next_collective(CommOp::AllGather, count, None);
            output[c.rank * count..(c.rank + 1) * count].copy_from_slice(input);
            c.ring_all_gather(output, |i| i * count..(i + 1) * count, tag)
        })
    }

    fn reduce_scatter_sum(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), CommError> {
        self.call(CommOp::ReduceScatter, input.len(), |c| {
            let (count, n) = (output.len(), c.world_size);
            if input.len() != n * count {
                let problem = format!(
                    "the input has {} elements, but scattering {count} to each of {n} ranks \
                     needs {}",
                    input.len(),
                    n * count
                );
                let op = CommOp::ReduceScatter;
                return Err(CommError::BadLength {
                    op,
                    rank: c.rank,
                    problem,
                });
            }
            let tag = c.next_collective(CommOp::ReduceScatter, count, None);
            // The input is the caller's; the partial sums go into a copy.
            let mut work = input.to_vec();
            c.ring_reduce_scatter(&mut work, |i| i * count..(i + 1) * count, tag)?;
            output.copy_from_slice(&work[c.rank * count..(c.rank + 1) * count]);
            Ok(())
        })
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<(), CommError> {
        self.call(CommOp::Broadcast, buf.len(), |c| {
            if root >= c.world_size {
                return Err(c.bad_rank(CommOp::Broadcast, root));
            }
            let tag = c.next_collective(CommOp::Broadcast, buf.len(), Some(root));
            // Along the ring from the root: every rank but the one before the root forwards
            // the buffer once, so each sends `size` bytes at most, as NCCL's ring broadcast.
            if c.rank != root {
                c.recv_msg(c.left(), tag, buf, false)?;
            }
            if c.right() != root {
                c.send_msg(c.right(), tag, buf)?;
            }
            Ok(())
        })
    }

    fn send(&mut self, buf: &[f32], dst: usize) -> Result<(), CommError> {
        self.call(CommOp::Send, buf.len(), |c| {
            c.check_peer(CommOp::Send, dst)?;
            let tag = CallTag {
                op: CommOp::Send,
                seq: c.sends[dst],
                count: buf.len(),
                root: None,
            };
            c.sends[dst] += 1;
            c.send_msg(dst, tag, buf)
        })
    }

    fn recv(&mut self, buf: &mut [f32], src: usize) -> Result<(), CommError> {
        self.call(CommOp::Recv, buf.len(), |c| {
            c.check_peer(CommOp::Recv, src)?;
            let tag = CallTag {
                op: CommOp::Recv,
                seq: c.recvs[src],
                count: buf.len(),
                root: None,
            };
            c.recvs[src] += 1;
            c.recv_msg(src, tag, buf, false)
        })
    }

    fn barrier(&mut self) -> Result<(), CommError> {
        self.call(CommOp::Barrier, 0, |c| {
            let tag = c.next_collective(CommOp::Barrier, 0, None);
            let peers: Vec<usize> = (0..c.world_size).filter(|&p| p != c.rank).collect();
            for &peer in &peers {
                c.send_msg(peer, tag, &[])?;
            }
            // Every peer has sent its message once it reached the barrier.
            for &peer in &peers {
                c.recv_msg(peer, tag, &mut [], false)?;
            }
            Ok(())
        })
    }

    fn stats(&self) -> &CommStats {
        &self.stats
    }
}
