//! Block tables: which physical KV blocks hold each sequence's tokens (vLLM's
//! `KVCacheManager` / v0 `BlockSpaceManager`).
//!
//! The scheduler asks one question before granting a sequence new tokens: "can the cache hold
//! `n` tokens of it?" `allocate_slots` answers by growing the block table, all or nothing, so a
//! failed request leaves no half-allocated state behind.

use std::collections::HashMap;

use super::block::{blocks_needed, BlockId};
use super::block_allocator::BlockAllocator;
use crate::sequence::SeqId;

/// Per-sequence block tables over one block allocator.
pub struct BlockManager {
    block_size: usize,
    allocator: Box<dyn BlockAllocator>,
    block_tables: HashMap<SeqId, Vec<BlockId>>,
}

impl BlockManager {
    pub fn new(block_size: usize, allocator: Box<dyn BlockAllocator>) -> Self {
        BlockManager {
            block_size,
            allocator,
            block_tables: HashMap::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    // ANCHOR: allocate_slots
    /// Grows `seq`'s block table so it can hold `num_tokens` tokens in total. Returns false,
    /// changing nothing, if the free blocks are too few.
    pub fn allocate_slots(&mut self, seq: SeqId, num_tokens: usize) -> bool {
        let have = self.block_tables.get(&seq).map_or(0, Vec::len);
        let need = blocks_needed(num_tokens, self.block_size).saturating_sub(have);
        if need > self.allocator.num_free_blocks() {
            return false;
        }
        let table = self.block_tables.entry(seq).or_default();
        for _ in 0..need {
            let block = self
                .allocator
                .allocate()
                .expect("free count was checked above");
            table.push(block);
        }
        true
    }
    // ANCHOR_END: allocate_slots

    /// Returns all of `seq`'s blocks to the allocator (on finish or preemption by recompute).
    pub fn free(&mut self, seq: SeqId) {
        if let Some(table) = self.block_tables.remove(&seq) {
            for block in table {
                self.allocator.free(block);
            }
        }
    }

    /// `seq`'s blocks in token order (empty if it has none).
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.block_tables.get(&seq).map_or(&[], Vec::as_slice)
    }

    pub fn num_free_blocks(&self) -> usize {
        self.allocator.num_free_blocks()
    }

    pub fn num_total_blocks(&self) -> usize {
        self.allocator.num_total_blocks()
    }

    /// Owners of a block, for invariant checks.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.allocator.ref_count(block)
    }

    /// All block tables, for invariant checks.
    pub fn block_tables(&self) -> impl Iterator<Item = (&SeqId, &Vec<BlockId>)> {
        self.block_tables.iter()
    }
}
