//! Which cached block to give up when the cache needs room (vLLM v0's `LRUEvictor`; v1 keeps
//! the same order in its free block queue).
//!
//! A block whose last owner finished still holds valid KV, so the prefix cache keeps it
//! until a fresh block is needed and none is free. Then the block unused for the longest time
//! goes first: least recently used. A hit on a parked block takes it out again, and when its
//! owners let go once more it comes back as the newest.

use std::collections::BTreeMap;

use super::block::BlockId;
use super::id_hash::IdHashMap;

// ANCHOR: lru_evictor
/// Parked blocks in least-recently-used order; each operation is O(log n).
#[derive(Debug, Default, Clone)]
pub struct LruEvictor {
    /// Parked blocks by the tick they were parked at: the first entry is the oldest.
    by_age: BTreeMap<u64, BlockId>,
    /// Each parked block's tick, to take a block out from the middle on a hit.
    tick_of: IdHashMap<BlockId, u64>,
    clock: u64,
}

impl LruEvictor {
    /// Parks `block` as the most recently used.
    ///
    /// Panics if it is parked already: a block parks when its last owner leaves, once.
    pub fn add(&mut self, block: BlockId) {
        self.clock += 1;
        let old = self.tick_of.insert(block, self.clock);
        assert!(old.is_none(), "block {block:?} parked twice");
        self.by_age.insert(self.clock, block);
    }

    /// Takes `block` out (a cache hit); false if it was not parked.
    pub fn remove(&mut self, block: BlockId) -> bool {
        match self.tick_of.remove(&block) {
            Some(tick) => self.by_age.remove(&tick).is_some(),
            None => false,
        }
    }

    /// Takes out and returns the least recently used block, if any.
    pub fn evict(&mut self) -> Option<BlockId> {
        let (_, block) = self.by_age.pop_first()?;
        self.tick_of.remove(&block);
        Some(block)
    }
    // ANCHOR_END: lru_evictor

    pub fn contains(&self, block: BlockId) -> bool {
        self.tick_of.contains_key(&block)
    }

    pub fn len(&self) -> usize {
        self.tick_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tick_of.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_parked_and_a_hit_renews_a_block() {
        let mut e = LruEvictor::default();
        for b in [3, 1, 2] {
            e.add(BlockId(b));
        }
        assert!(e.remove(BlockId(3)), "a hit takes block 3 out");
        e.add(BlockId(3)); // its owners let go again: now the newest
        assert_eq!(e.evict(), Some(BlockId(1)));
        assert_eq!(e.evict(), Some(BlockId(2)));
        assert_eq!(e.evict(), Some(BlockId(3)));
        assert_eq!(e.evict(), None);
        assert!(!e.remove(BlockId(3)));
    }

    #[test]
    #[should_panic(expected = "parked twice")]
    fn parking_a_block_twice_panics() {
        let mut e = LruEvictor::default();
        e.add(BlockId(0));
        e.add(BlockId(0));
    }
}
