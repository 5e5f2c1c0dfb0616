//! Block tables: which physical KV blocks hold each sequence's tokens (vLLM's
//! `KVCacheManager` / v0 `BlockSpaceManager`).
//!
//! The scheduler asks one question before granting a sequence new tokens: "can the cache hold
//! `n` tokens of it?" `allocate_slots` answers by growing the block table, all or nothing, so a
//! failed request leaves no half-allocated state behind.
//!
//! With prefix caching on ([`BlockManager::with_prefix_caching`]), a sequence about to be
//! admitted first asks [`BlockManager::get_computed_blocks`] which of its full blocks are
//! already in the cache; [`BlockManager::allocate_slots_with_prefix`] then shares those
//! (one owner more each) and allocates the rest, and [`BlockManager::cache_full_blocks`]
//! registers each full block as the step that computes it is scheduled. Reference counts say who owns a block;
//! the cache keeps the last reference of a registered block nobody owns (a *parked* block,
//! see [`super::prefix_cache`]), so the allocator, a learner's in stage 1, needs no change.

use super::block::{blocks_needed, BlockId};
use super::block_allocator::BlockAllocator;
use super::block_hash::{full_block_hashes, hash_block_tokens, BlockHash};
use super::id_hash::IdHashMap;
use super::prefix_cache::{PrefixCache, PrefixCacheStats, PREFIX_CACHE_SPAN};
use crate::sequence::{SeqId, Sequence};

/// What a lookup found: a sequence's longest cached prefix of full blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputedBlocks {
    /// The cached blocks, in token order.
    pub blocks: Vec<BlockId>,
    /// Their hashes, in the same order (each chained with the one before).
    pub hashes: Vec<BlockHash>,
    /// Tokens they hold: `blocks.len() * block_size`.
    pub num_tokens: usize,
    /// Tokens the sequence had when looked up (0 when no lookup was made).
    pub num_queried_tokens: usize,
}

/// Per-sequence block tables over one block allocator, with an optional prefix cache.
pub struct BlockManager {
    block_size: usize,
    allocator: Box<dyn BlockAllocator>,
    block_tables: IdHashMap<SeqId, Vec<BlockId>>,
    /// `None` when prefix caching is off.
    prefix_cache: Option<PrefixCache>,
    /// The hash chain of each sequence's computed full blocks, to extend one block at a time.
    seq_hashes: IdHashMap<SeqId, Vec<BlockHash>>,
}

impl BlockManager {
    /// A block manager without prefix caching.
    pub fn new(block_size: usize, allocator: Box<dyn BlockAllocator>) -> Self {
        BlockManager {
            block_size,
            allocator,
            block_tables: IdHashMap::default(),
            prefix_cache: None,
            seq_hashes: IdHashMap::default(),
        }
    }

    /// Turns automatic prefix caching on or off (before any allocation).
    pub fn with_prefix_caching(mut self, enabled: bool) -> Self {
        assert!(self.block_tables.is_empty(), "set before any allocation");
        self.prefix_cache = enabled.then(PrefixCache::default);
        self
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn prefix_caching_enabled(&self) -> bool {
        self.prefix_cache.is_some()
    }

    // ANCHOR: allocate_slots
    /// Grows `seq`'s block table so it can hold `num_tokens` tokens in total. Returns false,
    /// changing nothing, if the free blocks are too few.
    pub fn allocate_slots(&mut self, seq: SeqId, num_tokens: usize) -> bool {
        let have = self.block_tables.get(&seq).map_or(0, Vec::len);
        let need = blocks_needed(num_tokens, self.block_size).saturating_sub(have);
        if need > self.num_free_blocks() {
            return false;
        }
        let fresh: Vec<BlockId> = (0..need).map(|_| self.allocate_block()).collect();
        self.block_tables.entry(seq).or_default().extend(fresh);
        true
    }
    // ANCHOR_END: allocate_slots

    // ANCHOR: get_computed_blocks
    /// The longest prefix of `seq`'s full blocks that is cached, for a sequence about to be
    /// admitted (none when caching is off or the sequence holds blocks already).
    ///
    /// The last token is never counted as cached, even when every block of the sequence is:
    /// its logits give the next token, so at least that token must go through the model.
    /// A prompt of exactly `k` full blocks, all cached, therefore hits `k - 1` of them.
    pub fn get_computed_blocks(&self, seq: &Sequence) -> ComputedBlocks {
        let Some(cache) = &self.prefix_cache else {
            return ComputedBlocks::default();
        };
        if self.block_tables.contains_key(&seq.seq_id) || seq.num_computed_tokens > 0 {
            return ComputedBlocks::default();
        }
        let max_hit = seq.num_known_tokens() - 1;
        let mut found = ComputedBlocks {
            num_queried_tokens: seq.num_known_tokens(),
            ..ComputedBlocks::default()
        };
        for (hash, tokens) in full_block_hashes(|i| seq.token_at(i), max_hit, self.block_size) {
            let Some(block) = cache.lookup(hash, &tokens) else {
                break;
            };
            found.blocks.push(block);
            found.hashes.push(hash);
        }
        found.num_tokens = found.blocks.len() * self.block_size;
        found
    }
    // ANCHOR_END: get_computed_blocks

    // ANCHOR: allocate_slots_with_prefix
    /// Like [`Self::allocate_slots`] for a sequence with no blocks yet whose first blocks
    /// are `prefix` (from [`Self::get_computed_blocks`]): they join its table, one owner more
    /// each, and fresh blocks follow up to `num_tokens`. All or nothing.
    pub fn allocate_slots_with_prefix(
        &mut self,
        seq: SeqId,
        num_tokens: usize,
        prefix: &ComputedBlocks,
    ) -> bool {
        let have = self.block_tables.get(&seq).map_or(0, Vec::len) + prefix.blocks.len();
        let need = blocks_needed(num_tokens, self.block_size).saturating_sub(have);
        // A parked block of the prefix counts as free now; taking it uses up that room.
        let parked = self.prefix_cache.as_ref().map_or(0, |c| {
            prefix.blocks.iter().filter(|&&b| c.is_parked(b)).count()
        });
        if need + parked > self.num_free_blocks() {
            return false;
        }
        if let Some(cache) = &mut self.prefix_cache {
            assert!(
                prefix.blocks.is_empty() || !self.block_tables.contains_key(&seq),
                "a prefix is shared only into an empty block table"
            );
            for &block in &prefix.blocks {
                // A parked block's last reference, held by the cache, passes to `seq`;
                // a block others own gains an owner.
                if !cache.unpark(block) {
                    self.allocator.fork(block);
                }
            }
            if prefix.num_queried_tokens > 0 {
                // Inside the engine's `schedule` span, which names the step.
                let _span = tracing::debug_span!(
                    PREFIX_CACHE_SPAN,
                    request_id = seq.0,
                    queried_tokens = prefix.num_queried_tokens,
                    hit_tokens = prefix.num_tokens,
                )
                .entered();
                cache.stats.num_queries += 1;
                cache.stats.queried_tokens += prefix.num_queried_tokens;
                cache.stats.hit_tokens += prefix.num_tokens;
                self.seq_hashes.insert(seq, prefix.hashes.clone());
            }
        }
        self.block_tables
            .entry(seq)
            .or_default()
            .extend(&prefix.blocks);
        let grown = self.allocate_slots(seq, num_tokens);
        debug_assert!(grown, "the room was checked above");
        grown
    }
    // ANCHOR_END: allocate_slots_with_prefix

    /// A fresh block: a free one if any, else the least recently used parked block, evicted
    /// (prefix caching). The caller has checked that one exists.
    fn allocate_block(&mut self) -> BlockId {
        if let Some(block) = self.allocator.allocate() {
            return block;
        }
        let cache = self.prefix_cache.as_mut().expect("free count was checked");
        let victim = cache.evict().expect("free count was checked");
        // The cache held the parked block's last reference; now it is free for anyone.
        self.allocator.free(victim);
        self.allocator
            .allocate()
            .expect("a block was freed just now")
    }

    // ANCHOR: cache_full_blocks
    /// Registers `seq`'s full blocks among its first `num_tokens` tokens, so that requests
    /// scheduled after it can find them (vLLM v1's `cache_blocks`). The scheduler calls it as
    /// it schedules `seq`, with the tokens computed once this step has run: a block may be hit
    /// in the very step that computes it, because a step writes every scheduled token's keys
    /// and values into the cache before attention reads it (layer by layer, and micro-batch
    /// after micro-batch in batch order), and a request that hits comes later in the batch.
    pub fn cache_full_blocks(&mut self, seq: &Sequence, num_tokens: usize) {
        let (Some(cache), Some(table)) = (
            self.prefix_cache.as_mut(),
            self.block_tables.get(&seq.seq_id),
        ) else {
            return;
        };
        let bs = self.block_size;
        let hashes = self.seq_hashes.entry(seq.seq_id).or_default();
        // A block holding a placeholder (async scheduling) waits: its hash needs the token.
        let full = (num_tokens.min(seq.num_known_tokens()) / bs).min(table.len());
        let start = hashes.len();
        for (k, &block) in table.iter().enumerate().take(full).skip(start) {
            let tokens: Vec<u32> = (k * bs..(k + 1) * bs).map(|i| seq.token_at(i)).collect();
            let hash = hash_block_tokens(hashes.last().copied(), &tokens);
            cache.insert(hash, block, tokens);
            hashes.push(hash);
        }
    }
    // ANCHOR_END: cache_full_blocks

    /// Gives up `seq`'s blocks (on finish or preemption by recompute). A block returns to the
    /// allocator when its last owner lets go, unless it is registered in the prefix cache:
    /// then it is parked, still holding its KV. The last block is parked first, so it is
    /// evicted first: a sequence's tail is the part least likely to be shared.
    pub fn free(&mut self, seq: SeqId) {
        self.seq_hashes.remove(&seq);
        let Some(table) = self.block_tables.remove(&seq) else {
            return;
        };
        for block in table.into_iter().rev() {
            match &mut self.prefix_cache {
                Some(cache)
                    if self.allocator.ref_count(block) == 1 && cache.is_registered(block) =>
                {
                    cache.park(block)
                }
                _ => self.allocator.free(block),
            }
        }
    }

    /// `seq`'s blocks in token order (empty if it has none).
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.block_tables.get(&seq).map_or(&[], Vec::as_slice)
    }

    /// Blocks a new allocation can take: free ones plus parked (cached, unowned) ones.
    pub fn num_free_blocks(&self) -> usize {
        self.allocator.num_free_blocks() + self.prefix_cache.as_ref().map_or(0, |c| c.num_parked())
    }

    pub fn num_total_blocks(&self) -> usize {
        self.allocator.num_total_blocks()
    }

    /// Sequences owning a block, for invariant checks (a parked block has none: the cache's
    /// reference is not an owner).
    pub fn ref_count(&self, block: BlockId) -> u32 {
        let parked = self
            .prefix_cache
            .as_ref()
            .is_some_and(|c| c.is_parked(block));
        self.allocator.ref_count(block) - u32::from(parked)
    }

    /// Whether `block` is parked in the prefix cache (free to evict, found again until then).
    pub fn is_parked(&self, block: BlockId) -> bool {
        self.prefix_cache
            .as_ref()
            .is_some_and(|c| c.is_parked(block))
    }

    /// Parked blocks (0 without prefix caching).
    pub fn num_parked_blocks(&self) -> usize {
        self.prefix_cache.as_ref().map_or(0, |c| c.num_parked())
    }

    /// Lookups, queried and hit tokens, evictions so far (all 0 without prefix caching).
    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.prefix_cache
            .as_ref()
            .map_or_else(Default::default, |c| c.stats)
    }

    /// All block tables, for invariant checks.
    pub fn block_tables(&self) -> impl Iterator<Item = (&SeqId, &Vec<BlockId>)> {
        self.block_tables.iter()
    }
}
