//! The tagged messages a [`CpuCommunicator`]'s ranks exchange: sending, receiving with the
//! group's timeout, and checking that what arrives belongs to the call in progress.

use std::sync::mpsc::RecvTimeoutError;

use super::{CpuCommunicator, F32_BYTES};
use crate::distributed::communicator::{CallTag, CommError, CommOp};

/// One message between two ranks: which call it belongs to, and its payload.
#[derive(Debug)]
pub(super) struct Message {
    tag: CallTag,
    data: Vec<f32>,
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
        let Some(tx) = &self.to[peer] else {
            return Err(self.bad_rank(tag.op, peer));
        };
        let message = Message {
            tag,
            data: data.to_vec(),
        };
        // An unbounded channel: `send` fails only when the receiving end is gone.
        tx.send(message).map_err(|_| CommError::PeerGone {
            op: tag.op,
            rank: self.rank,
            peer,
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
