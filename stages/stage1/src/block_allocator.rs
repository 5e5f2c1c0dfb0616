//! Exercise 1: a block allocator with reference counts (vLLM's `BlockAllocator`).
//!
//! The KV cache is `num_blocks` fixed-size blocks. The block manager asks the allocator for a
//! block whenever a sequence's block table must grow, and gives blocks back when a sequence
//! finishes or is preempted. A block can have several owners (two sequences sharing a prompt
//! prefix, a beam-search fork), so the allocator counts owners and only recycles a block when
//! the last one frees it.
//!
//! Implement [`BlockAllocator`] for [`RefCountingAllocator`]; the engine's trait documents each
//! method. Every operation should be O(1): the scheduler calls them for every block of every
//! step.
//!
//! Test: `cargo test -p stage1 --test block_allocator`.

#[cfg(not(feature = "reference"))]
use engine::core::block::BlockId;
#[cfg(not(feature = "reference"))]
use engine::core::block_allocator::BlockAllocator;

#[cfg(feature = "reference")]
pub use engine::core::block_allocator::RefCountingAllocator;

// HINT: two vectors are enough.
//   - a free list `Vec<BlockId>`: `allocate` pops from it, `free` pushes onto it (a stack makes
//     both O(1); fill it so that `pop` returns block 0 first, which reads well in traces);
//   - `ref_counts: Vec<u32>`, indexed by `block.0 as usize`: 1 after `allocate`, +1 on `fork`,
//     −1 on `free`; reaching 0 puts the block back on the free list.
//   `num_free_blocks` is the free list's length; `num_total_blocks` is `ref_counts.len()`.
//   Forking or freeing a block whose count is already 0 is a bug in the caller: `assert!` it,
//   with a message naming the block.

/// A free list plus one reference count per block.
#[cfg(not(feature = "reference"))]
#[derive(Debug, Clone)]
pub struct RefCountingAllocator {
    // TODO(stage1): your fields (see the HINT above).
}

#[cfg(not(feature = "reference"))]
impl RefCountingAllocator {
    /// An allocator of `num_blocks` blocks, all free.
    pub fn new(num_blocks: usize) -> Self {
        todo!("stage1: RefCountingAllocator::new in stages/stage1/src/block_allocator.rs — make `num_blocks` free blocks with reference count 0")
    }
}

#[cfg(not(feature = "reference"))]
impl BlockAllocator for RefCountingAllocator {
    /// Takes a free block and sets its count to 1; `None` when every block is in use.
    fn allocate(&mut self) -> Option<BlockId> {
        todo!("stage1: RefCountingAllocator::allocate — pop a free block, set its reference count to 1")
    }

    /// One more owner of an allocated block.
    fn fork(&mut self, block: BlockId) {
        todo!("stage1: RefCountingAllocator::fork — add one to the block's reference count (assert it was allocated)")
    }

    /// One owner fewer; at 0 the block is free again.
    fn free(&mut self, block: BlockId) {
        todo!("stage1: RefCountingAllocator::free — subtract one from the count; at 0 push the block back on the free list")
    }

    fn ref_count(&self, block: BlockId) -> u32 {
        todo!(
            "stage1: RefCountingAllocator::ref_count — the block's number of owners (0 when free)"
        )
    }

    fn num_free_blocks(&self) -> usize {
        todo!("stage1: RefCountingAllocator::num_free_blocks — how many blocks `allocate` can still hand out")
    }

    fn num_total_blocks(&self) -> usize {
        todo!("stage1: RefCountingAllocator::num_total_blocks — the `num_blocks` given to `new`")
    }
}
