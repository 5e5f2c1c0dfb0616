//! Exercise 4: preemption by swap, the host side (vLLM v0's CPU block allocator and the
//! `swap_out`/`swap_in` of its block manager).
//!
//! Recompute (exercise 2) throws a victim's KV cache away. Swap keeps it: every device block
//! of the victim is copied to a block of a *swap space* in host memory, and the device blocks
//! go back to the block manager; when the victim resumes it gets fresh device blocks (any free
//! ones) and the host blocks are copied into them, position by position. The scheduler does
//! the bookkeeping and hands the worker a list of [`BlockCopy`]s to make before the step's
//! forward pass. You write that bookkeeping:
//! - [`swap_out_copies`]: a host block for each device block of the victim, all or nothing;
//! - [`swap_in_copies`]: the copies back, in table order, and the host blocks given back;
//! - [`preemption_choice`]: swap when the mode asks for it and the victim fits, recompute
//!   otherwise.
//!
//! The engine's `SwapSpace` and `Scheduler::preempt_victim` call the same three functions.
//! Test: `cargo test -p stage1 --test swap_space`.

#[cfg(not(feature = "reference"))]
use engine::core::block::BlockId;
#[cfg(not(feature = "reference"))]
use engine::core::block_allocator::BlockAllocator;
#[cfg(not(feature = "reference"))]
use engine::core::preemption::PreemptionMode;
pub use engine::core::swap_space::BlockCopy;

#[cfg(feature = "mutants")]
pub use crate::mutants::swap_space::{preemption_choice, swap_in_copies, swap_out_copies};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::swap_space::{preemption_choice, swap_in_copies, swap_out_copies};

// HINT (swap_out_copies): check before you take: a swap that fails half-way would leave host
//   blocks owned by nobody's table. The i-th copy belongs to the i-th block of the table.
// HINT (swap_in_copies): the host blocks are the swap space's only record of the sequence;
//   once the copies are listed, nobody owns them any more.
// HINT (preemption_choice): two conditions, and the answer is never "half a swap".

// ANCHOR: stub
/// The host side of a swap-out: pairs each block of the victim's `device_table`, in table
/// order, with a fresh block of `host` (its one owner). All or nothing: `None`, taking no
/// block, when `host` has fewer free blocks than the table is long.
#[cfg(not(feature = "reference"))]
pub fn swap_out_copies(
    host: &mut dyn BlockAllocator,
    device_table: &[BlockId],
) -> Option<Vec<BlockCopy>> {
    todo!("stage1: swap_out_copies in stages/stage1/src/swap_space.rs — a host block per device block, or None")
}

/// The host side of a swap-in: `host_table[i]` is copied into `device_table[i]` (the fresh
/// device blocks the sequence got, so its table reads in the same order as before the
/// swap-out), and every host block is given back to `host`. Both tables have the same length.
#[cfg(not(feature = "reference"))]
pub fn swap_in_copies(
    host: &mut dyn BlockAllocator,
    host_table: &[BlockId],
    device_table: &[BlockId],
) -> Vec<BlockCopy> {
    todo!("stage1: swap_in_copies in stages/stage1/src/swap_space.rs — copies in table order, host blocks freed")
}

/// How a victim holding `victim_blocks` device blocks gives them back under `mode` when the
/// swap space has `free_host_blocks` free: by swap only when the mode asks for it and every
/// block gets a host block; by recompute otherwise.
#[cfg(not(feature = "reference"))]
pub fn preemption_choice(
    mode: PreemptionMode,
    victim_blocks: usize,
    free_host_blocks: usize,
) -> PreemptionMode {
    todo!(
        "stage1: preemption_choice in stages/stage1/src/swap_space.rs — swap if asked and it fits"
    )
}
// ANCHOR_END: stub
