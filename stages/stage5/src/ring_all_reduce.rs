//! Exercise 1: the ring all-reduce, from point-to-point messages.
//!
//! N ranks each hold a buffer of the same length; afterwards every rank holds the element-wise
//! sum of all N. The ring does it with every rank talking only to its neighbours: it sends to
//! the right (`rank + 1`) and receives from the left (`rank − 1`), modulo N. The buffer is cut
//! into N chunks; the call is a reduce-scatter (N − 1 steps: receive a chunk, add it to yours,
//! pass it on) followed by an all-gather (N − 1 steps: receive a finished chunk, copy it, pass
//! it on). At every step every rank sends one chunk, so each rank sends 2(N − 1)/N of the
//! buffer, whatever N: that is why NCCL uses it for large messages.
//!
//! You get a [`Communicator`] (one rank's end of the group; the tests use the engine's
//! `CpuCommunicator`, ranks as threads) and use only its `rank`, `world_size`, `send` and
//! `recv`. The chapter's "Ring all-reduce" section has the contract and the N = 3 example
//! worked by hand.
//!
//! Test: `cargo test -p stage5 --test ring_all_reduce`.

#[cfg(not(feature = "mutants"))]
use engine::distributed::{CommError, Communicator};

#[cfg(feature = "mutants")]
pub use crate::mutants::ring_all_reduce::ring_all_reduce;

/// The reference: the engine's own ring (`engine/src/distributed/ring.rs`).
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub fn ring_all_reduce(comm: &mut dyn Communicator, buf: &mut [f32]) -> Result<(), CommError> {
    comm.all_reduce_sum(buf)
}

// HINT: chunk i of a buffer of `len` elements over N ranks: `i·len/N .. (i+1)·len/N` gives
//   chunks of ⌊len/N⌋ or ⌈len/N⌉ elements that cover the buffer in order (the engine's
//   `engine::distributed::ring::ring_chunk` computes exactly that; you may call it).
// HINT: at reduce-scatter step s, which chunk does rank r send? It must be the one it finished
//   adding at step s − 1 (at step 0: one it has not touched). Write the N = 3 table of the
//   chapter for your formula before you code it.
// HINT: `recv` needs a buffer of exactly the length that was sent; receive into a scratch
//   buffer, then add (reduce-scatter) or copy (all-gather) into your chunk.
// HINT: `comm.send` never blocks on the CPU communicator (its channels are unbounded), so
//   "send, then receive" cannot deadlock here. (On NCCL the pair goes in one group call.)
// HINT: pass every error on with `?`: a rank whose peer has died must get an `Err`, not hang.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Replaces `buf` on every rank by the element-wise sum of all ranks' `buf`, by a ring
/// reduce-scatter then a ring all-gather, each rank sending only to `rank + 1` and receiving
/// only from `rank − 1` (mod `world_size`). Every rank must call it with the same length.
pub fn ring_all_reduce(
    comm: &mut dyn Communicator,
    buf: &mut [f32], // [len], the same len on every rank
) -> Result<(), CommError> {
    todo!(
        "stage5: ring_all_reduce in stages/stage5/src/ring_all_reduce.rs — reduce-scatter \
         then all-gather around the ring, one chunk per send"
    )
}
// ANCHOR_END: stub
