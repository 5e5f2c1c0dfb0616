//! Exercise 1: a block allocator with reference counts (vLLM's `BlockAllocator`).
//!
//! The KV cache is `num_blocks` fixed-size blocks. The block manager asks the allocator for a
//! block when a sequence's block table must grow, and gives blocks back when a sequence
//! finishes or is preempted. A block can have several owners (two sequences sharing a prompt
//! prefix, a beam-search fork), so the allocator counts owners and recycles a block only when
//! the last one lets go.
//!
//! Implement [`BlockAllocator`] for [`RefCountingAllocator`]; the engine's trait documents each
//! method, including the two misuses that must panic. Keep every operation O(1): the
//! allocator sits on the scheduler's path every step.
//!
//! Test: `cargo test -p stage1 --test block_allocator`.

#[cfg(not(feature = "reference"))]
use engine::core::block::BlockId;
#[cfg(not(feature = "reference"))]
use engine::core::block_allocator::BlockAllocator;

#[cfg(feature = "mutants")]
pub use crate::mutants::block_allocator::RefCountingAllocator;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::core::block_allocator::RefCountingAllocator;

// HINT: two questions must be answered without a scan: "which block is free?" (a stack of
// free blocks pushes and pops in O(1)) and "how many owners has block b?" (one count per
// block, indexed by its number). A block moves on or off the stack only when its count
// crosses zero. A fork or free of a block nobody owns is the caller's bug: panic, and name
// the block in the message.

// ANCHOR: stub
/// Hands out KV blocks and counts their owners.
#[cfg(not(feature = "reference"))]
#[derive(Debug, Clone)]
pub struct RefCountingAllocator {
    // TODO(stage1): your fields.
}

#[cfg(not(feature = "reference"))]
impl RefCountingAllocator {
    /// An allocator of `num_blocks` blocks, all free.
    pub fn new(num_blocks: usize) -> Self {
        todo!("stage1: RefCountingAllocator::new in stages/stage1/src/block_allocator.rs")
    }
}

#[cfg(not(feature = "reference"))]
impl BlockAllocator for RefCountingAllocator {
    fn allocate(&mut self) -> Option<BlockId> {
        todo!("stage1: RefCountingAllocator::allocate — a free block, one owner; or None")
    }

    fn fork(&mut self, block: BlockId) {
        todo!("stage1: RefCountingAllocator::fork — one owner more; panic on a free block")
    }

    fn free(&mut self, block: BlockId) {
        todo!("stage1: RefCountingAllocator::free — one owner fewer; panic on a double free")
    }

    fn ref_count(&self, block: BlockId) -> u32 {
        todo!("stage1: RefCountingAllocator::ref_count — the block's owners (0 when free)")
    }

    fn num_free_blocks(&self) -> usize {
        todo!("stage1: RefCountingAllocator::num_free_blocks — blocks `allocate` can hand out")
    }

    fn num_total_blocks(&self) -> usize {
        todo!("stage1: RefCountingAllocator::num_total_blocks — the `num_blocks` of `new`")
    }
}
// ANCHOR_END: stub
