//! Hands out physical KV blocks and takes them back (vLLM's `BlockAllocator`).
//!
//! A trait, because stage 1 has the learner write one. Blocks carry reference counts so that
//! several sequences can share a block (prefix caching, beam search forks); a block returns to
//! the free list only when its last owner frees it.

use super::block::BlockId;

// ANCHOR: allocator_trait
/// Allocation of physical blocks with reference counts.
///
/// The block manager calls it when a block table grows (`allocate`) and when a sequence lets
/// its blocks go on finish or preemption (`free`), on the scheduler's path every step: every
/// operation should be O(1).
pub trait BlockAllocator: Send {
    /// Takes a free block (reference count 1), or `None` when all are in use.
    fn allocate(&mut self) -> Option<BlockId>;
    /// Adds an owner to an allocated block.
    ///
    /// Panics if `block` is free: forking a block nobody owns is a bug in the caller.
    fn fork(&mut self, block: BlockId);
    /// Drops one owner; the block is free again when none remain.
    ///
    /// Panics if `block` is already free (a double free): the caller has lost track of who
    /// owns it, and the panic says so where it happens rather than steps later.
    fn free(&mut self, block: BlockId);
    /// Owners of `block` (0 when free).
    fn ref_count(&self, block: BlockId) -> u32;
    /// Blocks `allocate` can still hand out.
    fn num_free_blocks(&self) -> usize;
    /// Blocks in the cache, free or not.
    fn num_total_blocks(&self) -> usize;
}
// ANCHOR_END: allocator_trait

// ANCHOR: allocator
/// A free list plus a reference count per block.
#[derive(Debug, Clone)]
pub struct RefCountingAllocator {
    /// Free blocks; allocation pops from the end.
    free_list: Vec<BlockId>,
    ref_counts: Vec<u32>,
}

impl RefCountingAllocator {
    pub fn new(num_blocks: usize) -> Self {
        // Reverse so that block 0 is handed out first: easier to read in traces.
        let free_list = (0..num_blocks as u32).rev().map(BlockId).collect();
        RefCountingAllocator {
            free_list,
            ref_counts: vec![0; num_blocks],
        }
    }
}

impl BlockAllocator for RefCountingAllocator {
    fn allocate(&mut self) -> Option<BlockId> {
        let block = self.free_list.pop()?;
        self.ref_counts[block.0 as usize] = 1;
        Some(block)
    }

    fn fork(&mut self, block: BlockId) {
        let count = &mut self.ref_counts[block.0 as usize];
        assert!(*count > 0, "fork of free block {block:?}");
        *count += 1;
    }

    fn free(&mut self, block: BlockId) {
        let count = &mut self.ref_counts[block.0 as usize];
        assert!(*count > 0, "double free of block {block:?}");
        *count -= 1;
        if *count == 0 {
            self.free_list.push(block);
        }
    }

    fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts[block.0 as usize]
    }

    fn num_free_blocks(&self) -> usize {
        self.free_list.len()
    }

    fn num_total_blocks(&self) -> usize {
        self.ref_counts.len()
    }
}
// ANCHOR_END: allocator
