//! Exercise 1: slot mapping, from a block table to a row of the KV cache (vLLM's
//! `slot_mapping`).
//!
//! The KV cache of each layer is one big array of `num_blocks * block_size` rows ("slots"),
//! one row per token. A sequence does not own a contiguous range of it: its *block table*
//! lists the blocks holding its tokens, in order, wherever the allocator found them. Block
//! `b` of the cache owns slots `b * block_size .. (b + 1) * block_size`:
//!
//! ```text
//! block_size 4, block_table [7, 2]:  position 0 1 2 3 | 4 5 6 7
//!                                    slot    28 …  31 | 8 …  11
//! ```
//!
//! `reshape_and_cache` writes each new token's key and value to its slot; paged attention
//! reads them back through the same table. The contract (what must hold, with examples worked
//! by hand) is in the book's Stage 3 chapter, "Block tables and slot mapping".
//!
//! Test: `cargo test -p stage3 --test slot_mapping`.

#[cfg(not(feature = "reference"))]
use engine::core::block::{BlockId, SlotId};

#[cfg(feature = "mutants")]
pub use crate::mutants::slot_mapping::slot_for_position;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::block::slot_for_position;

// HINT: a table entry covers `block_size` consecutive positions of the sequence: which entry
//   covers `position`, and how far into that block is it? Check your answer against the
//   diagram above before you write code.
// HINT: `BlockId` wraps a `u32` and `SlotId` a `u64`. Block 100 000 000 of a cache with
//   64-token blocks is a legal block; is its first slot a legal `u32`?
// HINT: a position the table does not cover is an engine bug (the scheduler allocates a
//   position's block before it schedules the position). Do not guess a block: panic.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// The cache slot of the token at `position` of a sequence with this block table.
pub fn slot_for_position(block_table: &[BlockId], block_size: usize, position: usize) -> SlotId {
    todo!(
        "stage3: slot_for_position in stages/stage3/src/slot_mapping.rs — the KV-cache \
         slot of the token at `position`, found through `block_table`"
    )
}
// ANCHOR_END: stub
