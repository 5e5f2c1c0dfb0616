//! Exercise 1: block reductions, the step inside RMSNorm and softmax where every thread of a
//! block must learn one number that depends on all of them (a sum of squares, a maximum).
//!
//! A warp can reduce its 32 values in registers, with five shuffles
//! ([`warp_sum`], [`warp_max`]). A block has up
//! to 32 warps, which cannot see each other's registers: their partial results meet in shared
//! memory, one slot per warp, with a barrier between the writes and the reads.
//! vLLM's `blockReduceSum` (csrc/reduction_utils.cuh) and our `block_sum` in
//! kernels/cuda/common.cuh are this function.
//!
//! Contract, for both functions:
//! - Every thread of the block calls it (it waits at barriers), with a 1-D block whose size is a
//!   multiple of 32 (so every warp is whole), and gets the result over all threads.
//! - Every thread gets the *same* `f32`, bit for bit (RMSNorm divides every element of a row
//!   by it: two threads with two different roots would be a bug no test of the row's norm sees).
//! - It may be called several times in a row in one kernel (softmax calls `block_max`, then
//!   `block_sum`; a kernel may call `block_sum` twice).
//!
//! Test: `cargo test -p stage4 --test block_reduce`.

#[cfg(not(feature = "reference"))]
use crate::gpu::{shared, sync_threads, thread_idx, warp_max, warp_sum, WARP_SIZE};

#[cfg(feature = "mutants")]
pub use crate::mutants::block_reduce::{block_max, block_sum};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use crate::reference::block_reduce::{block_max, block_sum};

// HINT: warp `thread_idx().x / 32` and lane `thread_idx().x % 32`; `block_dim().x / 32` warps.
//   Reduce in the warp first; lane 0 of each warp then leaves its warp's result in a
//   `shared::<f32>(32)` array (32 warps at most), and after a barrier every thread combines the
//   slots, all in the same order (why does the order matter?).
// HINT: call it twice in a row, in your head: can a fast warp's lane 0 write its slot for the
//   second call while a slow thread still reads the slots of the first?
// Going further: instead of every thread reading all the slots, warp 0 could load them and
//   reduce them with one more `warp_sum`; time is not measured here, but count the shared
//   reads of each version.

#[cfg(not(feature = "reference"))]
// ANCHOR: block_sum
/// The sum of `value` over every thread of the block, returned to every thread.
pub async fn block_sum(value: f32) -> f32 {
    todo!(
        "stage4: block_sum in stages/stage4/src/block_reduce.rs — warp_sum in each warp, one \
         slot per warp in shared memory, a barrier, then every thread adds the slots"
    )
}
// ANCHOR_END: block_sum

#[cfg(not(feature = "reference"))]
// ANCHOR: block_max
/// The maximum of `value` over every thread of the block, returned to every thread.
pub async fn block_max(value: f32) -> f32 {
    todo!(
        "stage4: block_max in stages/stage4/src/block_reduce.rs — as block_sum, with max \
         instead of +"
    )
}
// ANCHOR_END: block_max
