//! The identity of a full KV block, for prefix caching (vLLM's `BlockHash`).
//!
//! A token's keys and values depend on every token before it, not on the token alone: two
//! blocks holding the same 16 tokens hold the same KV only if their whole prefixes match. So
//! the hash of block `k` covers its own tokens *and the hash of block `k - 1`*, its parent.
//! Equal hashes then mean equal prefixes (up to a collision), and finding the longest cached
//! prefix of a prompt is one map lookup per block, walking from the first block until a miss.
//!
//! Only full blocks get a hash: a partial block is still being written, and a block that will
//! be written to cannot be shared.
//!
//! The hash is FNV-1a over the bytes, written out here rather than `std`'s `DefaultHasher`,
//! whose keys are random per process (`RandomState`) and whose algorithm may change between
//! Rust releases: the same prompt must give the same hashes in every run and in every process
//! (traces name them, tests compare them; vLLM hands them to other processes). A 64-bit hash
//! can collide, which would give a request another prefix's KV; the cache also keeps each
//! block's tokens and checks them on a hit (see `prefix_cache`), so a collision would need
//! the same tokens under a colliding parent. vLLM offers SHA-256 for those who want none.

// ANCHOR: block_hash
/// The hash of one full block's tokens chained with its parent's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u64);

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of a block holding `tokens`, whose previous block hashed to `parent` (`None` for a
/// sequence's first block).
pub fn hash_block_tokens(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    let mut hash = FNV_OFFSET_BASIS;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    // A tag byte, so that "no parent" never equals a parent whose hash happens to be 0.
    match parent {
        None => eat(&[0]),
        Some(p) => {
            eat(&[1]);
            eat(&p.0.to_le_bytes());
        }
    }
    for t in tokens {
        eat(&t.to_le_bytes());
    }
    BlockHash(hash)
}
// ANCHOR_END: block_hash

/// The chained hashes of the full blocks among the first `num_tokens` tokens, with each
/// block's tokens, reading token `i` from `token_at(i)`. A partial last block is left out.
pub fn full_block_hashes(
    token_at: impl Fn(usize) -> u32,
    num_tokens: usize,
    block_size: usize,
) -> Vec<(BlockHash, Vec<u32>)> {
    let mut out: Vec<(BlockHash, Vec<u32>)> = Vec::with_capacity(num_tokens / block_size);
    for k in 0..num_tokens / block_size {
        let tokens: Vec<u32> = (k * block_size..(k + 1) * block_size)
            .map(&token_at)
            .collect();
        let parent = out.last().map(|(h, _)| *h);
        out.push((hash_block_tokens(parent, &tokens), tokens));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_across_runs() {
        // FNV-1a of the tag byte 0 and the little-endian bytes of 1 and 2, computed outside the
        // engine (Python) once: if it changes, every hash recorded elsewhere changes.
        assert_eq!(
            hash_block_tokens(None, &[1, 2]),
            BlockHash(0x8714_6320_6d35_667c)
        );
    }

    #[test]
    fn the_parent_is_part_of_the_hash() {
        let a = hash_block_tokens(None, &[5, 6]);
        let b = hash_block_tokens(None, &[7, 8]);
        assert_ne!(
            hash_block_tokens(Some(a), &[1, 2]),
            hash_block_tokens(Some(b), &[1, 2]),
            "same tokens after different prefixes must not share KV"
        );
        assert_ne!(
            hash_block_tokens(None, &[1, 2]),
            hash_block_tokens(Some(BlockHash(0)), &[1, 2])
        );
    }

    #[test]
    fn only_full_blocks_are_hashed_and_they_chain() {
        let tokens = [1, 2, 3, 4, 5, 6, 7];
        let hashes = full_block_hashes(|i| tokens[i], tokens.len(), 3);
        assert_eq!(hashes.len(), 2, "7 tokens in blocks of 3: two full blocks");
        assert_eq!(hashes[0].1, [1, 2, 3]);
        assert_eq!(
            hashes[1].0,
            hash_block_tokens(Some(hashes[0].0), &[4, 5, 6])
        );
    }
}
