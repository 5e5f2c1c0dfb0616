//! Names for the units of the paged KV cache, as types so they cannot be mixed up.
//!
//! The cache is `num_blocks` blocks of `block_size` token slots. A sequence's block table lists
//! the blocks holding its tokens in order; token `i` lives in block `table[i / block_size]` at
//! offset `i % block_size`, which is the slot `block * block_size + offset`.

/// Index of a physical KV block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// Index of one token's row in the KV cache: `block * block_size + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(pub u64);

// ANCHOR: slot_for_position
/// The cache slot of the token at `position` of a sequence with this block table.
///
/// Panics if the table has no block for that position: the scheduler allocates blocks before
/// any token is scheduled, so a missing block is an engine bug, not bad input.
pub fn slot_for_position(block_table: &[BlockId], block_size: usize, position: usize) -> SlotId {
    let block = block_table[position / block_size];
    let offset = position % block_size;
    SlotId(block.0 as u64 * block_size as u64 + offset as u64)
}
// ANCHOR_END: slot_for_position

// ANCHOR: blocks_needed
/// Blocks needed to hold `num_tokens` tokens.
pub fn blocks_needed(num_tokens: usize, block_size: usize) -> usize {
    num_tokens.div_ceil(block_size)
}
// ANCHOR_END: blocks_needed
