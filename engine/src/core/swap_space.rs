//! The host swap space's bookkeeping (vLLM v0's CPU block allocator and `swap_in`/`swap_out`
//! of its block manager): which host blocks hold each swapped-out sequence, and which block
//! copies the worker must make.
//!
//! The scheduler decides, the worker copies. Swapping out gives every device block of the
//! sequence a host block and returns the device blocks to the block manager; swapping in
//! allocates fresh device blocks (any free ones: the block table is rebuilt, position by
//! position) and returns the host blocks. Both are all or nothing, like `allocate_slots`.
//!
//! The copies of one step must happen before the step's forward pass (a device block freed
//! by a swap-out may be handed to another sequence that writes it in the same step), and
//! a step never both swaps out and swaps in: the scheduler resumes swapped sequences only in
//! a step that preempted nobody, so a host block freed by a swap-in is never the target of a
//! swap-out before its copy is made.

use super::block::{blocks_needed, BlockId};
use super::block_allocator::{BlockAllocator, RefCountingAllocator};
use super::block_manager::BlockManager;
use super::id_hash::IdHashMap;
use super::preemption::PreemptionMode;
use crate::sequence::SeqId;

// ANCHOR: block_copy
/// One block's copy between the device cache and the host swap space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCopy {
    /// Block of the device KV cache.
    pub device: BlockId,
    /// Block of the host swap space.
    pub host: BlockId,
}

/// The copies one step asks of the worker, made before its forward pass: all swap-outs,
/// then all swap-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwapOps {
    /// Device → host, for the sequences in `swapped_out`.
    pub swap_out: Vec<BlockCopy>,
    /// Host → device, for the sequences in `swapped_in`.
    pub swap_in: Vec<BlockCopy>,
    pub swapped_out: Vec<SeqId>,
    pub swapped_in: Vec<SeqId>,
}
// ANCHOR_END: block_copy

impl SwapOps {
    pub fn is_empty(&self) -> bool {
        self.swap_out.is_empty() && self.swap_in.is_empty()
    }
}

// ANCHOR: swap_mapping
/// The host side of a swap-out: pairs each block of the victim's `device_table`, in table
/// order, with a fresh block of `host` (its one owner). All or nothing: `None`, taking no
/// block, when `host` has fewer free blocks than the table is long.
pub fn swap_out_copies(
    host: &mut dyn BlockAllocator,
    device_table: &[BlockId],
) -> Option<Vec<BlockCopy>> {
    if device_table.len() > host.num_free_blocks() {
        return None;
    }
    let copies = device_table
        .iter()
        .map(|&device| BlockCopy {
            device,
            host: host.allocate().expect("free count was checked"),
        })
        .collect();
    Some(copies)
}

/// The host side of a swap-in: `host_table[i]` is copied into `device_table[i]` (the fresh
/// device blocks the sequence got, position by position, so its block table reads in the
/// same order as before the swap-out), and every host block is given back to `host`.
/// Both tables have one block per position of the sequence's cache.
pub fn swap_in_copies(
    host: &mut dyn BlockAllocator,
    host_table: &[BlockId],
    device_table: &[BlockId],
) -> Vec<BlockCopy> {
    debug_assert_eq!(host_table.len(), device_table.len());
    let copies = host_table
        .iter()
        .zip(device_table)
        .map(|(&host, &device)| BlockCopy { device, host })
        .collect();
    for &block in host_table {
        host.free(block);
    }
    copies
}

/// How a victim holding `victim_blocks` device blocks gives them back under `mode` when the
/// swap space has `free_host_blocks` free: by swap only when the mode asks for it and every
/// block gets a host block; by recompute otherwise (a swap never happens in part).
pub fn preemption_choice(
    mode: PreemptionMode,
    victim_blocks: usize,
    free_host_blocks: usize,
) -> PreemptionMode {
    match mode {
        PreemptionMode::Swap if victim_blocks <= free_host_blocks => PreemptionMode::Swap,
        _ => PreemptionMode::Recompute,
    }
}
// ANCHOR_END: swap_mapping

/// Host blocks and the swapped-out sequences' tables over them.
pub struct SwapSpace {
    allocator: RefCountingAllocator,
    tables: IdHashMap<SeqId, Vec<BlockId>>,
}

impl SwapSpace {
    /// A swap space of `num_blocks` host blocks (0: every swap fails, and the scheduler
    /// recomputes instead).
    pub fn new(num_blocks: usize) -> Self {
        SwapSpace {
            allocator: RefCountingAllocator::new(num_blocks),
            tables: IdHashMap::default(),
        }
    }

    // ANCHOR: swap_out
    /// Moves `seq`'s blocks to the host: every device block gets a host block, the device
    /// blocks go back to `blocks`. Returns the copies to make, or `None`, changing nothing,
    /// when the free host blocks are too few.
    pub fn swap_out(&mut self, blocks: &mut BlockManager, seq: SeqId) -> Option<Vec<BlockCopy>> {
        let copies = swap_out_copies(&mut self.allocator, blocks.block_table(seq))?;
        self.tables
            .insert(seq, copies.iter().map(|c| c.host).collect());
        blocks.free(seq);
        Some(copies)
    }
    // ANCHOR_END: swap_out

    // ANCHOR: swap_in
    /// Brings `seq`'s `num_tokens` computed tokens back: fresh device blocks for its host
    /// blocks, in order. Returns the copies, or `None`, changing nothing, when the free device
    /// blocks are too few.
    pub fn swap_in(
        &mut self,
        blocks: &mut BlockManager,
        seq: SeqId,
        num_tokens: usize,
    ) -> Option<Vec<BlockCopy>> {
        let host = self.tables.get(&seq)?;
        debug_assert_eq!(host.len(), blocks_needed(num_tokens, blocks.block_size()));
        if !blocks.block_table(seq).is_empty() || !blocks.allocate_slots(seq, num_tokens) {
            return None;
        }
        let host = self.tables.remove(&seq).expect("looked up above");
        Some(swap_in_copies(
            &mut self.allocator,
            &host,
            blocks.block_table(seq),
        ))
    }
    // ANCHOR_END: swap_in

    /// Forgets a swapped-out sequence that will not resume (aborted), freeing its host blocks.
    pub fn free(&mut self, seq: SeqId) {
        for block in self.tables.remove(&seq).unwrap_or_default() {
            self.allocator.free(block);
        }
    }

    /// Host blocks `seq` holds (empty unless it is swapped out).
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables.get(&seq).map_or(&[], Vec::as_slice)
    }

    pub fn num_free_blocks(&self) -> usize {
        self.allocator.num_free_blocks()
    }

    pub fn num_total_blocks(&self) -> usize {
        self.allocator.num_total_blocks()
    }

    /// Owners of a host block, for invariant checks.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.allocator.ref_count(block)
    }

    /// Every swapped-out sequence's host blocks, for invariant checks.
    pub fn block_tables(&self) -> impl Iterator<Item = (&SeqId, &Vec<BlockId>)> {
        self.tables.iter()
    }
}
