//! Plausible wrong slot mappings:
//!
//! - `slot_mapping_last_block`: past the end of the block table, falls back to the table's
//!   last block instead of panicking (the source's token 49 → slot 129; see the errata).
//! - `slot_mapping_u32`: computes the slot in `u32`, so a large block id times the block size
//!   wraps around (as it does in a release build without overflow checks).

use engine::core::block::{BlockId, SlotId};

use super::active;

pub fn slot_for_position(block_table: &[BlockId], block_size: usize, position: usize) -> SlotId {
    if active("slot_mapping_last_block") {
        let logical = (position / block_size).min(block_table.len() - 1);
        let block = block_table[logical];
        SlotId(block.0 as u64 * block_size as u64 + (position % block_size) as u64)
    } else if active("slot_mapping_u32") {
        let block = block_table[position / block_size];
        let slot = block
            .0
            .wrapping_mul(block_size as u32)
            .wrapping_add((position % block_size) as u32);
        SlotId(slot as u64)
    } else {
        engine::core::block::slot_for_position(block_table, block_size, position)
    }
}
