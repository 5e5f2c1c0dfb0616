//! The tagged messages a [`CpuCommunicator`]'s ranks exchange: sending, receiving with the
//! group's timeout, and checking that what arrives belongs to the call in progress.

use std::sync::mpsc::{RecvTimeoutError, Sender};

use super::{CpuCommunicator, F32_BYTES};
use crate::distributed::communicator::{CallTag, CommError, CommOp};

/// One message between two ranks: which call it belongs to, and its payload.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::distributed) struct Message {
    pub tag: CallTag,
    pub data: Vec<f32>,
}

/// Why a message could not be posted to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::distributed) enum PostError {
    /// The peer's end is closed (its communicator was dropped, its process died).
    Gone,
    /// The peer stopped taking messages for longer than the group's timeout (a socket whose
    /// buffers stayed full: the peer is hung).
    TimedOut,
}

/// Where one rank's messages to one peer go, in order.
pub(in crate::distributed) trait Outbox: Send + std::fmt::Debug {
    /// Hands `message` on toward the peer; it arrives after every message posted before it.
    fn post(&mut self, message: Message) -> Result<(), PostError>;
}

/// In one process: the unbounded channel to the peer's thread (never blocks).
impl Outbox for Sender<Message> {
    fn post(&mut self, message: Message) -> Result<(), PostError> {
        self.send(message).map_err(|_| PostError::Gone)
    }
}

impl CpuCommunicator {
    /// Sends to the right neighbour, `rank + 1`.
    pub(in crate::distributed) fn send_right(
        &mut self,
        tag: CallTag,
        data: &[f32],
    ) -> Result<(), CommError> {
        self.send_msg(self.right(), tag, data)
    }

    /// Receives from the left neighbour, `rank - 1` (see [`Self::recv_msg`]).
    pub(in crate::distributed) fn recv_left(
        &mut self,
        tag: CallTag,
        dst: &mut [f32],
        add: bool,
    ) -> Result<(), CommError> {
        self.recv_msg(self.left(), tag, dst, add)
    }

    /// The left neighbour on the ring, `rank − 1`.
    pub(super) fn left(&self) -> usize {
        (self.rank + self.world_size - 1) % self.world_size
    }

    /// The right neighbour on the ring, `rank + 1`.
    pub(super) fn right(&self) -> usize {
        (self.rank + 1) % self.world_size
    }

    /// Sends `data` to `peer` as part of the call `tag`, counting its bytes.
    pub(super) fn send_msg(
        &mut self,
        peer: usize,
        tag: CallTag,
        data: &[f32],
    ) -> Result<(), CommError> {
        let (rank, timeout) = (self.rank, self.timeout);
        let Some(outbox) = self.to[peer].as_mut() else {
            return Err(self.bad_rank(tag.op, peer));
        };
        let message = Message {
            tag,
            data: data.to_vec(),
        };
        // A channel never blocks and fails only when the receiving end is gone; a socket can
        // also stay full past the timeout.
        outbox.post(message).map_err(|e| match e {
            PostError::Gone => CommError::PeerGone {
                op: tag.op,
                rank,
                peer,
            },
            PostError::TimedOut => CommError::Timeout {
                op: tag.op,
                rank,
                peer,
                timeout,
            },
        })?;
        self.sent_in_call += (data.len() * F32_BYTES) as u64;
        Ok(())
    }

    /// Receives the next message from `peer` into `dst` (copied, or added when `add`), after
    /// checking that it belongs to the call `ours` and has `dst`'s length.
    pub(super) fn recv_msg(
        &mut self,
        peer: usize,
        ours: CallTag,
        dst: &mut [f32],
        add: bool,
    ) -> Result<(), CommError> {
        let (op, rank) = (ours.op, self.rank);
        let Some(rx) = &self.from[peer] else {
            return Err(self.bad_rank(op, peer));
        };
        let message = rx.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => CommError::Timeout {
                op,
                rank,
                peer,
                timeout: self.timeout,
            },
            RecvTimeoutError::Disconnected => CommError::PeerGone { op, rank, peer },
        })?;
        let theirs = message.tag;
        let same_op = theirs.op == op || (op == CommOp::Recv && theirs.op == CommOp::Send);
        if !same_op || theirs.seq != ours.seq || theirs.root != ours.root {
            return Err(CommError::CallMismatch {
                rank,
                peer,
                ours,
                theirs,
            });
        }
        if theirs.count != ours.count || message.data.len() != dst.len() {
            let (ours, theirs) = (ours.count, theirs.count);
            return Err(CommError::LengthMismatch {
                op,
                rank,
                peer,
                ours,
                theirs,
            });
        }
        if add {
            // Addition is commutative in IEEE arithmetic, so `own + incoming` and
            // `incoming + own` are the same bits; what fixes the result is the ring's order.
            dst.iter_mut().zip(&message.data).for_each(|(d, x)| *d += x);
        } else {
            dst.copy_from_slice(&message.data);
        }
        Ok(())
    }
}
