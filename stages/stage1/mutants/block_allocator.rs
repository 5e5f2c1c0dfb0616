//! Wrong allocators: the engine's `RefCountingAllocator`, with one owner-counting mistake
//! switched on by `INFERENCE_LAB_MUTANT`.

use std::collections::HashSet;

use engine::core::block::BlockId;
use engine::core::block_allocator::{self as reference, BlockAllocator};

use super::active;

/// The engine's allocator, wrapped so that a mutant can change what one method does.
#[derive(Debug, Clone)]
pub struct RefCountingAllocator {
    inner: reference::RefCountingAllocator,
    /// `allocator_never_recycles`: blocks whose last owner freed them, which the mutant keeps
    /// off the free list (they read as having no owner).
    leaked: HashSet<BlockId>,
}

impl RefCountingAllocator {
    /// An allocator of `num_blocks` blocks, all free.
    pub fn new(num_blocks: usize) -> Self {
        RefCountingAllocator {
            inner: reference::RefCountingAllocator::new(num_blocks),
            leaked: HashSet::new(),
        }
    }
}

impl BlockAllocator for RefCountingAllocator {
    fn allocate(&mut self) -> Option<BlockId> {
        self.inner.allocate()
    }

    fn fork(&mut self, block: BlockId) {
        if active("allocator_ignores_fork_of_free_block") && self.ref_count(block) == 0 {
            return; // no assert: the caller's bug goes unnoticed
        }
        if active("allocator_recycles_while_referenced") {
            return; // the second owner is not counted
        }
        self.inner.fork(block)
    }

    fn free(&mut self, block: BlockId) {
        if active("allocator_ignores_double_free") && self.ref_count(block) == 0 {
            return; // no assert: the caller's bug goes unnoticed
        }
        if active("allocator_never_recycles") && self.inner.ref_count(block) == 1 {
            self.leaked.insert(block); // the count drops to 0, the free list never sees it
            return;
        }
        self.inner.free(block)
    }

    fn ref_count(&self, block: BlockId) -> u32 {
        if self.leaked.contains(&block) {
            0
        } else {
            self.inner.ref_count(block)
        }
    }

    fn num_free_blocks(&self) -> usize {
        self.inner.num_free_blocks()
    }

    fn num_total_blocks(&self) -> usize {
        self.inner.num_total_blocks()
    }
}
