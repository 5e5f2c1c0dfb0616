//! The ring all-reduce, the algorithm NCCL uses for large messages and the one stage 5 builds.
//!
//! N ranks stand in a ring; each talks only to its neighbours (it sends right, to `r + 1`, and
//! receives from the left, `r − 1`, modulo N). Each rank's buffer is cut into N chunks
//! ([`ring_chunk`]). The all-reduce is two halves of N − 1 steps each, and at every step every
//! rank sends one chunk and receives one:
//!
//! 1. **Reduce-scatter.** At step `s`, rank `r` sends chunk `r − 1 − s` and adds the chunk it
//!    receives into its own copy. The chunk a rank sends is the one it finished adding the step
//!    before, so after N − 1 steps rank `r` holds chunk `r` summed over all ranks.
//! 2. **All-gather.** At step `s`, rank `r` sends chunk `r − s` and *copies* the chunk it
//!    receives over its own. After N − 1 steps every rank holds every summed chunk.
//!
//! With N = 4, chunks A B C D, and `a2` for rank 2's A (`0 ─D→ 1`: rank 0 sends its D to 1):
//!
//! ```text
//! reduce-scatter (the receiver adds)                     after it
//!   step 0:  0 ─D→ 1   1 ─A→ 2   2 ─B→ 3   3 ─C→ 0         rank 0: A = a1+a2+a3+a0
//!   step 1:  0 ─C→ 1   1 ─D→ 2   2 ─A→ 3   3 ─B→ 0         rank 1: B = b2+b3+b0+b1
//!   step 2:  0 ─B→ 1   1 ─C→ 2   2 ─D→ 3   3 ─A→ 0         rank 2: C,  rank 3: D
//! all-gather (the receiver copies)
//!   step 0:  0 ─A→ 1   1 ─B→ 2   2 ─C→ 3   3 ─D→ 0
//!   step 1:  0 ─D→ 1   1 ─A→ 2   2 ─B→ 3   3 ─C→ 0
//!   step 2:  0 ─C→ 1   1 ─D→ 2   2 ─A→ 3   3 ─B→ 0         every rank: A B C D, summed
//! ```
//!
//! Chunk A is summed in one place, in one order, `((a1 + a2) + a3) + a0`, and then only copied,
//! so every rank ends with the same bits. (Float addition is not associative: a scheme in which
//! each rank summed the N inputs itself, in its own order, could leave ranks with different
//! values, and ranks of a tensor-parallel model would then drift apart.)
//!
//! **Traffic.** Each rank sends one chunk of size/N per step, for 2(N − 1) steps:
//! 2(N − 1)/N × size. For N = 4 that is 6 chunks of a quarter, 1.5 × size; for N = 2 it is
//! size; as N grows it tends to 2 × size and never passes it. So the bytes each link carries do
//! not grow with the number of ranks, and all links work at once: the time of a large
//! all-reduce is about 2(N − 1)/N × size / link bandwidth, almost independent of N. (Sending
//! everything to one rank to add and broadcast back would put (N − 1) × size through that rank's
//! link.) The price is 2(N − 1) steps one after the other: a small all-reduce, such as a decode
//! step's, is dominated by per-step latency, not bytes.
//!
//! **Rounding.** When N does not divide the length, chunks hold ⌊len/N⌋ or ⌈len/N⌉ elements.
//! Rank `r` sends every chunk but `r` in the first half and every chunk but `r + 1` in the
//! second: `2·len − |chunk r| − |chunk r+1|` elements, which is exactly 2(N − 1)/N × len when N
//! divides len and within 2 elements of it otherwise; over the whole group the ranks send
//! exactly 2(N − 1) × len elements. [`CommStats`](super::CommStats) counts what was sent, and
//! the tests check it against this formula.
//!
//! All-gather and reduce-scatter on their own are one half each, over equal blocks:
//! (N − 1)/N × the whole (gathered, or scattered) tensor per rank.

use std::ops::Range;

use super::communicator::{CallTag, CommError, Communicator};
use super::cpu_communicator::CpuCommunicator;

/// The elements of chunk `index` when a ring all-reduce over `world_size` ranks splits `len`
/// elements: `index·len/N .. (index+1)·len/N`, so chunks hold ⌊len/N⌋ or ⌈len/N⌉ elements
/// (some are empty when `len < N`) and together cover `0..len` in order.
pub fn ring_chunk(len: usize, world_size: usize, index: usize) -> Range<usize> {
    index * len / world_size..(index + 1) * len / world_size
}

impl CpuCommunicator {
    // ANCHOR: ring
    /// The first half. After it, block `rank` of `buf` holds the sum over every rank.
    pub(super) fn ring_reduce_scatter(
        &mut self,
        buf: &mut [f32],
        block: impl Fn(usize) -> Range<usize>,
        tag: CallTag,
    ) -> Result<(), CommError> {
        let (n, r) = (self.world_size(), self.rank());
        for step in 0..n - 1 {
            // r − 1 − s and r − 2 − s, kept non-negative by adding 2n.
            let send = (r + 2 * n - 1 - step) % n;
            let recv = (r + 2 * n - 2 - step) % n;
            self.send_right(tag, &buf[block(send)])?;
            self.recv_left(tag, &mut buf[block(recv)], true)?;
        }
        Ok(())
    }

    /// The second half: rank `r` starts with block `r` complete and ends with all of them.
    pub(super) fn ring_all_gather(
        &mut self,
        buf: &mut [f32],
        block: impl Fn(usize) -> Range<usize>,
        tag: CallTag,
    ) -> Result<(), CommError> {
        let (n, r) = (self.world_size(), self.rank());
        for step in 0..n - 1 {
            let send = (r + n - step) % n;
            let recv = (r + 2 * n - 1 - step) % n;
            self.send_right(tag, &buf[block(send)])?;
            self.recv_left(tag, &mut buf[block(recv)], false)?;
        }
        Ok(())
    }
    // ANCHOR_END: ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The order the docs promise: chunk c is summed starting at rank c + 1, around the ring,
    /// ending with rank c's own value. Ranks c + 1 and c + 2 hold 1e8 and −1e8 for chunk c,
    /// the others small values, which survive only if the big two cancel first: of the 24
    /// orders, only those starting with ranks c + 1 and c + 2 give the expected bits.
    #[test]
    fn each_chunk_is_summed_once_in_ring_order() {
        let n = 4;
        let value = |rank: usize, c: usize| {
            [1e8_f32, -1e8, 1.0, 0.25][(rank + 2 * n - c - 1) % n] * (c + 1) as f32
        };
        let comms = CpuCommunicator::group(n, Duration::from_secs(20));
        let outputs: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .into_iter()
                .map(|mut comm| {
                    s.spawn(move || {
                        let mut buf: Vec<f32> = (0..n).map(|i| value(comm.rank(), i)).collect();
                        comm.all_reduce_sum(&mut buf).map(|()| buf)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        for c in 0..n {
            let mut sum = value((c + 1) % n, c);
            for k in 2..=n {
                sum += value((c + k) % n, c);
            }
            for out in &outputs {
                assert_eq!(out[c].to_bits(), sum.to_bits(), "chunk {c}");
            }
        }
    }

    #[test]
    fn chunks_cover_the_buffer_in_order_with_sizes_floor_or_ceil() {
        for n in 1..=8 {
            for len in 0..40 {
                let mut next = 0;
                for i in 0..n {
                    let chunk = ring_chunk(len, n, i);
                    assert_eq!(chunk.start, next);
                    assert!(chunk.len() == len / n || chunk.len() == len.div_ceil(n));
                    next = chunk.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
