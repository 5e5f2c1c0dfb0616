//! Exercise 1: slot mapping, from a block table to a row of the KV cache (vLLM's
//! `slot_mapping`).
//!
//! The KV cache of each layer is one big array of `num_blocks * block_size` rows ("slots"),
//! one row per token. A sequence does not own a contiguous range of it: its *block table*
//! lists the blocks holding its tokens, in order, wherever the allocator found them. Token
//! `position` of the sequence therefore lives in block `block_table[position / block_size]`,
//! at offset `position % block_size` inside it:
//!
//! ```text
//! block_size 4, block_table [7, 2]:  position 0 1 2 3 | 4 5 6 7
//!                                    slot    28 …  31 | 8 …  11
//! ```
//!
//! `reshape_and_cache` writes each new token's key and value to its slot; paged attention
//! reads them back through the same table.
//!
//! Test: `cargo test -p stage3 --test slot_mapping`.

#[cfg(not(feature = "reference"))]
use engine::core::block::{BlockId, SlotId};

#[cfg(feature = "reference")]
pub use engine::core::block::slot_for_position;

// HINT: `block_table[position / block_size]` is the block; the slot is
//   `block * block_size + position % block_size`. Compute in u64: with many blocks the
//   product can exceed u32 (`BlockId` wraps a u32, `SlotId` a u64). Indexing past the table
//   should panic (the scheduler allocates blocks before scheduling tokens, so a missing block
//   is an engine bug): plain slice indexing does that.

/// The cache slot of the token at `position` of a sequence with this block table.
#[cfg(not(feature = "reference"))]
pub fn slot_for_position(block_table: &[BlockId], block_size: usize, position: usize) -> SlotId {
    todo!("stage3: slot_for_position in stages/stage3/src/slot_mapping.rs — block block_table[position / block_size], offset position % block_size, slot = block * block_size + offset")
}
