//! Automatic prefix caching: full KV blocks found again by the hash of their prefix (vLLM's
//! `BlockPool.cached_block_hash_to_block` with its free block queue).
//!
//! Many requests begin alike: a system prompt, a chat history, few-shot examples, a request
//! preempted and coming back. Their first blocks would hold the same KV, so instead of
//! computing it again, a new request takes the blocks another computed, if they are still
//! there. Three rules make that safe and cheap:
//!
//! - A block is *registered* under its [`BlockHash`] when the step that computes all its
//!   tokens is scheduled, never before: a request that hits it is scheduled after, in that
//!   step or a later one, and a step writes the cache before attention reads it.
//! - Only full blocks are shared, so no request ever writes into a shared block: the hitting
//!   request's own tokens start at a block boundary, in blocks of its own.
//! - A registered block whose owners all finished is *parked* rather than freed: its KV stays
//!   valid until a fresh block is needed and none is free; then the least recently used parked
//!   block is evicted ([`LruEvictor`]). Parked blocks count as free.
//!
//! The block manager holds this cache and does the reference counting; this module only
//! answers "which block holds this prefix?" and "which block goes first?".

use super::block::BlockId;
use super::block_hash::BlockHash;
use super::evictor::LruEvictor;
use super::id_hash::IdHashMap;

/// The span opened when a request is admitted after a lookup, with `request_id`,
/// `queried_tokens` and `hit_tokens` (0 on a miss), inside the engine's `schedule` span
/// whose `step` field names the step.
pub const PREFIX_CACHE_SPAN: &str = "prefix_cache";

/// Tokens asked about and found, over the cache's life (vLLM's `PrefixCacheStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Requests admitted after a lookup.
    pub num_queries: usize,
    /// Tokens of those requests when they were looked up (prompt plus any output).
    pub queried_tokens: usize,
    /// Of those, tokens found cached, whose prefill was skipped.
    pub hit_tokens: usize,
    /// Parked blocks given up for fresh ones.
    pub num_evictions: usize,
}

impl PrefixCacheStats {
    /// What happened between `earlier` and `self` (one step's counts, from two readings).
    pub fn since(&self, earlier: &PrefixCacheStats) -> PrefixCacheStats {
        PrefixCacheStats {
            num_queries: self.num_queries - earlier.num_queries,
            queried_tokens: self.queried_tokens - earlier.queried_tokens,
            hit_tokens: self.hit_tokens - earlier.hit_tokens,
            num_evictions: self.num_evictions - earlier.num_evictions,
        }
    }

    /// Hit tokens over queried tokens (0 before any query).
    pub fn hit_rate(&self) -> f64 {
        if self.queried_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.queried_tokens as f64
        }
    }
}

/// A registered block: where it is, and what it holds (checked on every hit).
#[derive(Debug, Clone)]
struct CachedBlock {
    block: BlockId,
    tokens: Vec<u32>,
}

// ANCHOR: prefix_cache
/// Registered blocks by hash, and the parked ones in eviction order.
#[derive(Debug, Default, Clone)]
pub struct PrefixCache {
    by_hash: IdHashMap<BlockHash, CachedBlock>,
    hash_of: IdHashMap<BlockId, BlockHash>,
    parked: LruEvictor,
    pub stats: PrefixCacheStats,
}

impl PrefixCache {
    /// The registered block holding `tokens` after the prefix that hashed to `hash`'s parent.
    /// The tokens are compared, not only the hash: a collision must not hand out other KV.
    pub fn lookup(&self, hash: BlockHash, tokens: &[u32]) -> Option<BlockId> {
        let cached = self.by_hash.get(&hash)?;
        (cached.tokens == tokens).then_some(cached.block)
    }

    /// Registers `block`, whose KV for `tokens` is computed by now, under `hash`. Does nothing if
    /// the hash already has a block (another request computed the same prefix first: the
    /// first copy is the one shared) or if `block` is registered already.
    pub fn insert(&mut self, hash: BlockHash, block: BlockId, tokens: Vec<u32>) {
        if self.by_hash.contains_key(&hash) || self.hash_of.contains_key(&block) {
            return;
        }
        self.by_hash.insert(hash, CachedBlock { block, tokens });
        self.hash_of.insert(block, hash);
    }

    /// Whether `block` is registered (its KV can be found again).
    pub fn is_registered(&self, block: BlockId) -> bool {
        self.hash_of.contains_key(&block)
    }

    /// Keeps a registered block that no request owns any more, as the most recently used.
    pub fn park(&mut self, block: BlockId) {
        debug_assert!(self.is_registered(block), "only registered blocks park");
        self.parked.add(block);
    }

    /// Takes a parked block back for a request that hit it; false if it was not parked.
    pub fn unpark(&mut self, block: BlockId) -> bool {
        self.parked.remove(block)
    }

    pub fn is_parked(&self, block: BlockId) -> bool {
        self.parked.contains(block)
    }

    /// Parked blocks: free to be evicted, and found again until they are.
    pub fn num_parked(&self) -> usize {
        self.parked.len()
    }

    /// Registered blocks, parked or owned.
    pub fn num_registered(&self) -> usize {
        self.hash_of.len()
    }

    /// Unregisters the least recently used parked block and returns it, to be reused.
    pub fn evict(&mut self) -> Option<BlockId> {
        let block = self.parked.evict()?;
        let hash = self
            .hash_of
            .remove(&block)
            .expect("parked blocks are registered");
        self.by_hash.remove(&hash);
        self.stats.num_evictions += 1;
        Some(block)
    }
}
// ANCHOR_END: prefix_cache

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::block_hash::hash_block_tokens;

    #[test]
    fn a_hit_needs_the_same_tokens_and_eviction_unregisters() {
        let mut c = PrefixCache::default();
        let h = hash_block_tokens(None, &[1, 2]);
        c.insert(h, BlockId(4), vec![1, 2]);
        c.insert(h, BlockId(5), vec![1, 2]); // a second copy: the first stays
        assert_eq!(c.lookup(h, &[1, 2]), Some(BlockId(4)));
        assert_eq!(
            c.lookup(h, &[1, 3]),
            None,
            "a colliding hash with other tokens"
        );
        assert!(!c.is_registered(BlockId(5)));
        c.park(BlockId(4));
        assert_eq!(c.evict(), Some(BlockId(4)));
        assert_eq!(c.lookup(h, &[1, 2]), None);
        assert_eq!(c.stats.num_evictions, 1);
    }
}
