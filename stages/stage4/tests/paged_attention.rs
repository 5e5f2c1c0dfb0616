//! Exercise 4: your decode-attention kernel against the engine's CPU paged attention, on random
//! decode batches (shuffled block tables, GQA, contexts that end mid-block), on examples by
//! hand, and its memory traffic.
//!
//! Every cache slot that no sequence has written holds NaN, and so does `out` before the
//! launch: reading past a context, or leaving an output unwritten, shows as NaN.

mod common;

use common::Kind::{Loads, Stores};
use engine::attention::attention_metadata::AttentionMetadata;
use engine::ops::paged_attention as engine_ops;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stage4::gpu::LaunchStats;
use stage4::paged_attention::paged_attention_decode;

/// A decode batch: one query row per sequence, both caches already holding every sequence's
/// keys and values (the new token's included).
#[derive(Debug)]
struct Batch {
    query: Vec<f32>,       // [num_seqs, num_heads, head_dim]
    key_cache: Vec<f32>,   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: Vec<f32>, // [num_blocks, block_size, num_kv_heads, head_dim]
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    meta: AttentionMetadata,
}

/// Random contents for sequences of `seq_lens` tokens; blocks handed out in a shuffled order
/// with spare blocks among them, so no table is contiguous. `q_scale` scales the queries.
fn batch(
    seq_lens: &[usize],
    num_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    q_scale: f32,
    seed: u64,
) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let num_heads = num_kv_heads * group;
    let kv_row = num_kv_heads * head_dim;
    let blocks: Vec<usize> = seq_lens.iter().map(|n| n.div_ceil(block_size)).collect();
    let num_blocks = blocks.iter().sum::<usize>() + 3;
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    let mut key_cache = vec![f32::NAN; num_blocks * block_size * kv_row];
    let mut value_cache = key_cache.clone();
    let max_blocks = blocks.iter().copied().max().unwrap_or(0);
    let mut meta = AttentionMetadata {
        block_size,
        max_blocks_per_seq: max_blocks,
        query_start_loc: (0..=seq_lens.len()).collect(),
        seq_lens: seq_lens.to_vec(),
        ..AttentionMetadata::default()
    };
    for (&len, &nb) in seq_lens.iter().zip(&blocks) {
        let table: Vec<u32> = (0..nb)
            .map(|_| free.swap_remove(rng.random_range(0..free.len())))
            .collect();
        let mut slot = 0;
        for p in 0..len {
            slot = table[p / block_size] as usize * block_size + p % block_size;
            for x in &mut key_cache[slot * kv_row..][..kv_row] {
                *x = rng.random_range(-2.0..2.0);
            }
            for x in &mut value_cache[slot * kv_row..][..kv_row] {
                *x = rng.random_range(-2.0..2.0);
            }
        }
        meta.slot_mapping.push(slot as u64); // the decode row's own slot: the last one
        meta.block_tables.extend(&table);
        meta.block_tables
            .extend(std::iter::repeat_n(0, max_blocks - nb));
    }
    let query = (0..seq_lens.len() * num_heads * head_dim)
        .map(|_| q_scale * rng.random_range(-2.0f32..2.0))
        .collect();
    Batch {
        query,
        key_cache,
        value_cache,
        num_heads,
        num_kv_heads,
        head_dim,
        meta,
    }
}

/// Your kernel's output (with `threads`) and its stats, and the engine's output.
fn run(b: &Batch, threads: usize) -> (Vec<f32>, LaunchStats, Vec<f32>) {
    let scale = 1.0 / (b.head_dim as f32).sqrt();
    let mut yours = vec![0.0; b.query.len()];
    let stats = paged_attention_decode(
        &mut yours,
        &b.query,
        &b.key_cache,
        &b.value_cache,
        b.num_kv_heads,
        b.head_dim,
        scale,
        &b.meta,
        threads,
    );
    let mut engine = vec![f32::NAN; b.query.len()];
    engine_ops::paged_attention(
        &mut engine,
        &b.query,
        &b.key_cache,
        &b.value_cache,
        b.num_kv_heads,
        b.head_dim,
        scale,
        &b.meta,
    );
    (yours, stats, engine)
}

fn compare(what: &str, b: &Batch, yours: &[f32], engine: &[f32]) -> Result<(), String> {
    match common::first_difference(yours, engine, 1e-4) {
        None => Ok(()),
        Some((i, a, e)) => {
            let (seq, head) = (i / (b.num_heads * b.head_dim), i / b.head_dim % b.num_heads);
            Err(format!(
                "{what}: sequence {seq}, head {head}: out[{i}] is {a}, the engine's is {e}"
            ))
        }
    }
}

proptest! {
    #![proptest_config(common::proptest_config(32))]

    #[test]
    fn matches_the_engine_on_decode_batches(
        seq_lens in prop::collection::vec(1usize..160, 1..4),
        num_kv_heads in 1usize..=3,
        group in 1usize..=3,
        head_dim in prop::sample::select(vec![4usize, 8, 12, 16, 40, 64]),
        block_size in prop::sample::select(vec![1usize, 3, 5, 16]),
        threads in prop::sample::select(vec![32usize, 64, 128]),
        seed: u64,
    ) {
        let b = batch(&seq_lens, num_kv_heads, group, head_dim, block_size, 1.0, seed);
        let (yours, _, engine) = run(&b, threads);
        let what = format!(
            "decode of seq_lens {seq_lens:?}, {} heads over {num_kv_heads} KV heads of \
             {head_dim}, block size {block_size}, {threads} threads",
            b.num_heads
        );
        compare(&what, &b, &yours, &engine).map_err(TestCaseError::fail)?;
    }
}

/// By hand: one sequence of 3 tokens, block size 2, block table `[2, 0]` (positions 0 and 1 in
/// block 2, position 2 in block 0), one head of 4, scale 1/2. The query `[2, 0, 0, 0]` scores a
/// key by its first element: 0, 0 and ln 2, so the weights are 1/4, 1/4, 1/2; the values are
/// one-hot times 4, so the output shows the weights.
#[test]
fn the_worked_example() {
    let ln2 = std::f32::consts::LN_2;
    let mut key_cache = vec![f32::NAN; 3 * 2 * 4];
    let mut value_cache = key_cache.clone();
    for (slot, k, v) in [
        (4, [0.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]),
        (5, [0.0, 0.0, 1.0, 0.0], [0.0, 4.0, 0.0, 0.0]),
        (0, [ln2, 0.0, 0.0, 1.0], [0.0, 0.0, 4.0, 0.0]),
    ] {
        key_cache[slot * 4..][..4].copy_from_slice(&k);
        value_cache[slot * 4..][..4].copy_from_slice(&v);
    }
    let meta = AttentionMetadata {
        slot_mapping: vec![0],
        query_start_loc: vec![0, 1],
        seq_lens: vec![3],
        block_tables: vec![2, 0],
        max_blocks_per_seq: 2,
        block_size: 2,
    };
    let mut out = [0.0; 4];
    let q = [2.0, 0.0, 0.0, 0.0];
    paged_attention_decode(&mut out, &q, &key_cache, &value_cache, 1, 4, 0.5, &meta, 32);
    common::assert_close("the worked example", &out, &[1.0, 1.0, 2.0, 0.0], 1e-6);
}

/// Six query heads over two KV heads: heads 0, 1, 2 read KV head 0 and heads 3, 4, 5 read KV
/// head 1, whose values are 1 and 2: each head's output is its KV head's number plus one.
#[test]
fn query_heads_share_kv_heads_in_consecutive_groups() {
    let (kv_heads, d, block_size) = (2, 8, 4);
    let key_cache = vec![0.5; block_size * kv_heads * d];
    let value_cache: Vec<f32> = (0..block_size * kv_heads * d)
        .map(|i| ((i / d) % kv_heads + 1) as f32)
        .collect();
    let meta = AttentionMetadata {
        slot_mapping: vec![2],
        query_start_loc: vec![0, 1],
        seq_lens: vec![3],
        block_tables: vec![0],
        max_blocks_per_seq: 1,
        block_size,
    };
    let q = [1.0; 6 * 8];
    let mut out = [f32::NAN; 6 * 8];
    paged_attention_decode(
        &mut out,
        &q,
        &key_cache,
        &value_cache,
        kv_heads,
        d,
        0.3,
        &meta,
        64,
    );
    for h in 0..6 {
        let want = [(h / 3 + 1) as f32; 8];
        common::assert_close(&format!("query head {h}"), &out[h * d..][..d], &want, 1e-6);
    }
}

/// Scores in the hundreds, as trained models produce: `exp` of them overflows f32 (past 88),
/// so the softmax must subtract the maximum first.
#[test]
fn large_scores_do_not_overflow() {
    let b = batch(&[70, 5], 2, 2, 16, 16, 60.0, 11);
    let (yours, _, engine) = run(&b, 64);
    assert!(
        engine.iter().all(|v| v.is_finite()),
        "the engine's reference overflowed"
    );
    compare("queries times 60", &b, &yours, &engine).unwrap();
}

/// Head sizes of whole sectors: each load of `key_cache` and `value_cache`, and each store of
/// `out`, moves only the bytes it asks for.
#[test]
fn keys_and_values_are_read_coalesced() {
    for (head_dim, threads) in [(8, 32), (16, 64), (64, 128), (128, 64)] {
        let b = batch(&[37, 100, 9], 2, 2, head_dim, 16, 1.0, head_dim as u64);
        let (yours, stats, engine) = run(&b, threads);
        let what = format!("decode, head_dim {head_dim}, {threads} threads");
        compare(&what, &b, &yours, &engine).unwrap();
        common::assert_coalesced(&what, &stats, "key_cache", Loads);
        common::assert_coalesced(&what, &stats, "value_cache", Loads);
        common::assert_coalesced(&what, &stats, "out", Stores);
    }
}
