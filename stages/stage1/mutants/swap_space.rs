//! Wrong swap bookkeeping: the engine's, with one mistake switched on by
//! `INFERENCE_LAB_MUTANT`.

use engine::core::block::BlockId;
use engine::core::block_allocator::BlockAllocator;
use engine::core::preemption::PreemptionMode;
use engine::core::swap_space::{self as reference, BlockCopy};

use super::active;

/// The engine's swap-out, or (`swap_out_reversed`) the host blocks paired with the table
/// read backwards.
pub fn swap_out_copies(
    host: &mut dyn BlockAllocator,
    device_table: &[BlockId],
) -> Option<Vec<BlockCopy>> {
    if !active("swap_out_reversed") {
        return reference::swap_out_copies(host, device_table);
    }
    let reversed: Vec<BlockId> = device_table.iter().rev().copied().collect();
    reference::swap_out_copies(host, &reversed)
}

/// The engine's swap-in, or one that keeps the host blocks (`swap_in_keeps_host_blocks`) or
/// pairs the tables in opposite orders (`swap_in_reversed`).
pub fn swap_in_copies(
    host: &mut dyn BlockAllocator,
    host_table: &[BlockId],
    device_table: &[BlockId],
) -> Vec<BlockCopy> {
    if active("swap_in_keeps_host_blocks") {
        return host_table
            .iter()
            .zip(device_table)
            .map(|(&host, &device)| BlockCopy { device, host })
            .collect();
    }
    if active("swap_in_reversed") {
        let reversed: Vec<BlockId> = device_table.iter().rev().copied().collect();
        return reference::swap_in_copies(host, host_table, &reversed);
    }
    reference::swap_in_copies(host, host_table, device_table)
}

/// The engine's choice, or (`swap_when_it_does_not_fit`) swap whenever the mode says so.
pub fn preemption_choice(
    mode: PreemptionMode,
    victim_blocks: usize,
    free_host_blocks: usize,
) -> PreemptionMode {
    if active("swap_when_it_does_not_fit") {
        return mode;
    }
    reference::preemption_choice(mode, victim_blocks, free_host_blocks)
}
