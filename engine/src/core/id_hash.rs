//! Hash maps keyed by the engine's own ids (sequence ids, block ids), with a cheap hash.
//!
//! The scheduler looks sequences and block tables up by id several times per scheduled
//! sequence per step: at batch 256 that is thousands of lookups a step, on the host, between
//! two forward passes. `std`'s default hasher (SipHash-1-3 with a random key) guards against
//! keys chosen by an attacker to collide; our keys are counters the engine hands out itself,
//! so one multiplication (Fibonacci hashing, as rustc's FxHash does) spreads them enough,
//! at a fraction of the cost (`lab bench --workload scheduler` measures the step).
//!
//! Only the hash differs: a map's contents and every lookup are the same. Its iteration
//! order differs from `std`'s, which was random per process anyway, so nothing may rely on it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` for keys that are the engine's own integer ids ([`IdHasher`]).
pub type IdHashMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Multiplies each integer written by 2^64 / φ (odd, so distinct ids stay distinct in the low
/// bits the table indexes with, and the high bits, which it also reads, mix all of them).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher {
    hash: u64,
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.hash
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by the ids (they write one integer); correct for anything else.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.hash = (self.hash.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::block::BlockId;
    use crate::sequence::SeqId;

    #[test]
    fn a_map_keyed_by_ids_finds_what_it_holds() {
        let mut seqs: IdHashMap<SeqId, usize> = IdHashMap::default();
        let mut blocks: IdHashMap<BlockId, u64> = IdHashMap::default();
        for i in 0..10_000u64 {
            seqs.insert(SeqId(i * 3), i as usize);
            blocks.insert(BlockId(i as u32), i);
        }
        assert_eq!(seqs.len(), 10_000);
        assert!((0..10_000u64).all(|i| seqs[&SeqId(i * 3)] == i as usize));
        assert!(!seqs.contains_key(&SeqId(1)));
        assert_eq!(blocks.remove(&BlockId(77)), Some(77));
        assert!(!blocks.contains_key(&BlockId(77)));
    }

    #[test]
    fn consecutive_ids_hash_apart() {
        let h = |x: u64| {
            let mut s = IdHasher::default();
            s.write_u64(x);
            s.finish()
        };
        // Distinct in the low bits (the bucket) and in the top 7 bits (hashbrown's tag) for
        // most neighbours: sequential ids spread over the table.
        let low: std::collections::HashSet<u64> = (0..1024).map(|x| h(x) & 1023).collect();
        assert_eq!(low.len(), 1024);
        let tags: std::collections::HashSet<u64> = (0..1024).map(|x| h(x) >> 57).collect();
        assert!(tags.len() > 100, "{} distinct tags", tags.len());
    }
}
