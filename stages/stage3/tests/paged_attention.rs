//! Exercise 5: your `paged_attention` against the engine's on random mixed batches, on a
//! batch worked by hand, then inside the engine.
//!
//! Every cache slot that no sequence has written holds NaN, and so does `out` before the call:
//! reading a key past a sequence's length, or through a padding entry of a block table, or
//! leaving an output element unwritten, makes the result NaN and the test fail.

mod common;

use engine::attention::attention_metadata::AttentionMetadata;
use engine::backend::cpu_backend::CpuKernels;
use engine::ops::paged_attention as reference;
use engine::EngineParts;
use proptest::prelude::*;
use proptest::test_runner::Config;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stage3::paged_attention::paged_attention;

/// A batch ready for the kernel: query rows, both caches (already holding every sequence's
/// keys and values, the query rows' included), and the metadata.
#[derive(Debug)]
struct Batch {
    query: Vec<f32>,       // [num_tokens, num_heads, head_dim]
    key_cache: Vec<f32>,   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: Vec<f32>, // [num_blocks, block_size, num_kv_heads, head_dim]
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    meta: AttentionMetadata,
}

/// Random contents for sequences of `(cached, new)` tokens: `cached` already in the cache
/// from earlier steps, `new` scheduled now (one query row each). Blocks are handed out in a
/// shuffled order with spare blocks between them, so no table is contiguous.
fn batch(
    seqs: &[(usize, usize)],
    num_kv_heads: usize,
    group: usize,
    head_dim: usize,
    block_size: usize,
    seed: u64,
) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let num_heads = num_kv_heads * group;
    let kv_row = num_kv_heads * head_dim;
    let blocks_per_seq: Vec<usize> = seqs
        .iter()
        .map(|&(cached, new)| (cached + new).div_ceil(block_size))
        .collect();
    let num_blocks = blocks_per_seq.iter().sum::<usize>() + 3;
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    let mut key_cache = vec![f32::NAN; num_blocks * block_size * kv_row];
    let mut value_cache = key_cache.clone();
    let mut meta = AttentionMetadata {
        block_size,
        max_blocks_per_seq: blocks_per_seq.iter().copied().max().unwrap_or(0),
        query_start_loc: vec![0],
        ..AttentionMetadata::default()
    };
    for (&(cached, new), &nb) in seqs.iter().zip(&blocks_per_seq) {
        let table: Vec<u32> = (0..nb)
            .map(|_| free.swap_remove(rng.random_range(0..free.len())))
            .collect();
        let seq_len = cached + new;
        for p in 0..seq_len {
            let slot = table[p / block_size] as usize * block_size + p % block_size;
            for x in &mut key_cache[slot * kv_row..][..kv_row] {
                *x = rng.random_range(-2.0..2.0);
            }
            for x in &mut value_cache[slot * kv_row..][..kv_row] {
                *x = rng.random_range(-2.0..2.0);
            }
            if p >= cached {
                meta.slot_mapping.push(slot as u64);
            }
        }
        meta.query_start_loc.push(meta.slot_mapping.len());
        meta.seq_lens.push(seq_len);
        meta.block_tables.extend(&table);
        let padding = meta.max_blocks_per_seq - table.len();
        meta.block_tables.extend(std::iter::repeat_n(0, padding));
    }
    let query = (0..meta.num_tokens() * num_heads * head_dim)
        .map(|_| rng.random_range(-2.0..2.0))
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

/// Runs a kernel on `b` with `out` full of NaN.
fn run(kernel: engine::backend::cpu_backend::PagedAttentionFn, b: &Batch) -> Vec<f32> {
    let mut out = vec![f32::NAN; b.query.len()];
    let scale = 1.0 / (b.head_dim as f32).sqrt();
    kernel(
        &mut out,
        &b.query,
        &b.key_cache,
        &b.value_cache,
        b.num_kv_heads,
        b.head_dim,
        scale,
        &b.meta,
    );
    out
}

/// `(cached, new)` per sequence: a decode (one new token after up to 300 cached), a prefill
/// chunk with a cached prefix, then up to three more of either kind (a first prefill chunk
/// has nothing cached).
fn sequences() -> impl Strategy<Value = Vec<(usize, usize)>> {
    let decode = (1usize..300, Just(1usize));
    let chunk = (1usize..200, 2usize..40);
    let any = (0usize..200, 1usize..30);
    (decode, chunk, prop::collection::vec(any, 0..4)).prop_map(|(d, c, mut rest)| {
        rest.insert(0, c);
        rest.insert(0, d);
        rest
    })
}

/// Stage 3's fixed-seed proptest settings; a wrong kernel fails every case, so shrinking
/// is kept short.
fn config() -> Config {
    Config {
        max_shrink_iters: 256,
        ..common::proptest_config(64)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn matches_the_engine_on_mixed_batches(
        seqs in sequences(),
        num_kv_heads in 1usize..=3,
        group in 1usize..=4,
        head_dim in prop::sample::select(vec![4usize, 8, 16]),
        block_size in prop::sample::select(vec![1usize, 3, 5, 7, 16]),
        seed: u64,
    ) {
        let b = batch(&seqs, num_kv_heads, group, head_dim, block_size, seed);
        let yours = run(paged_attention, &b);
        let engine = run(reference::paged_attention, &b);
        let what = format!(
            "paged_attention with (cached, new) = {seqs:?}, {} heads, {num_kv_heads} KV heads, \
             head_dim {head_dim}, block_size {block_size}",
            b.num_heads
        );
        // Not `assert_close`: a failure returned (not a panic) keeps the shrinking quiet.
        if let Some((i, a, e)) = first_difference(&yours, &engine, 1e-4) {
            let (row, head) = (i / (b.num_heads * head_dim), i / head_dim % b.num_heads);
            return Err(TestCaseError::fail(format!(
                "{what}: query row {row}, head {head}: out[{i}] is {a}, the engine's is {e}"
            )));
        }
    }
}

/// The first `(index, yours, engine)` with `|a - b| > tol · (1 + |b|)` (NaN included).
fn first_difference(yours: &[f32], engine: &[f32], tol: f32) -> Option<(usize, f32, f32)> {
    assert_eq!(yours.len(), engine.len());
    let far = |a: f32, b: f32| a.is_nan() || (a - b).abs() > tol * (1.0 + b.abs());
    (0..yours.len())
        .find(|&i| far(yours[i], engine[i]))
        .map(|i| (i, yours[i], engine[i]))
}

/// The example of the book: one sequence, block size 2, block table `[2, 0]`, head_dim 4
/// (scale 1/2), one head. Position 0 is cached; positions 1 and 2 are a prefill chunk.
/// Every query is `[2, 0, 0, 0]`, so a key's score is its first element: 0, 0 and ln 2.
/// Values are one-hot times 4, so the output shows the weights.
#[test]
fn worked_example() {
    let ln2 = std::f32::consts::LN_2;
    let nan = f32::NAN;
    let mut key_cache = vec![nan; 3 * 2 * 4];
    let mut value_cache = key_cache.clone();
    // (position, slot, key, value): positions 0, 1 in block 2 (slots 4, 5), 2 in block 0.
    let tokens = [
        (4, [0.0, 1.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]),
        (5, [0.0, 0.0, 1.0, 0.0], [0.0, 4.0, 0.0, 0.0]),
        (0, [ln2, 0.0, 0.0, 1.0], [0.0, 0.0, 4.0, 0.0]),
    ];
    for (slot, k, v) in tokens {
        key_cache[slot * 4..][..4].copy_from_slice(&k);
        value_cache[slot * 4..][..4].copy_from_slice(&v);
    }
    let meta = AttentionMetadata {
        slot_mapping: vec![5, 0],
        query_start_loc: vec![0, 2],
        seq_lens: vec![3],
        block_tables: vec![2, 0],
        max_blocks_per_seq: 2,
        block_size: 2,
    };
    let query = [2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0];
    let mut out = [nan; 8];
    paged_attention(&mut out, &query, &key_cache, &value_cache, 1, 4, 0.5, &meta);
    common::assert_close(
        "row 0 (position 1: weights 1/2, 1/2 on positions 0, 1)",
        &out[..4],
        &[2.0, 2.0, 0.0, 0.0],
        1e-6,
    );
    common::assert_close(
        "row 1 (position 2: weights 1/4, 1/4, 1/2 on positions 0, 1, 2)",
        &out[4..],
        &[1.0, 1.0, 2.0, 0.0],
        1e-6,
    );
}

/// Six query heads over two KV heads (groups of three): heads 0, 1, 2 read KV head 0, heads
/// 3, 4, 5 read KV head 1. Each KV head's values are its number plus one, so the output of
/// a head is the number of the KV head it read, plus one.
#[test]
fn query_heads_share_kv_heads_in_consecutive_groups() {
    let (kv_heads, d, block_size) = (2, 2, 4);
    let seq_len = 3;
    let key_cache = vec![0.5; block_size * kv_heads * d];
    let mut value_cache = vec![0.0; block_size * kv_heads * d];
    for (i, v) in value_cache.iter_mut().enumerate() {
        *v = ((i / d) % kv_heads + 1) as f32;
    }
    let meta = AttentionMetadata {
        slot_mapping: vec![2],
        query_start_loc: vec![0, 1],
        seq_lens: vec![seq_len],
        block_tables: vec![0],
        max_blocks_per_seq: 1,
        block_size,
    };
    let query = [1.0; 6 * 2];
    let mut out = [f32::NAN; 6 * 2];
    paged_attention(
        &mut out,
        &query,
        &key_cache,
        &value_cache,
        kv_heads,
        d,
        0.7,
        &meta,
    );
    for h in 0..6 {
        let kv_head = h / 3;
        common::assert_close(
            &format!("query head {h} (should read KV head {kv_head})"),
            &out[h * d..][..d],
            &[(kv_head + 1) as f32; 2],
            1e-6,
        );
    }
}

fn your_paged_attention() -> EngineParts {
    EngineParts {
        kernels: CpuKernels {
            paged_attention,
            ..CpuKernels::default()
        },
        ..EngineParts::default()
    }
}

/// "With your paged attention, the engine generates exactly the same tokens."
#[test]
fn engine_with_your_paged_attention_generates_the_same_tokens() {
    common::assert_same_as_engine(
        "your paged_attention",
        your_paged_attention,
        &common::greedy(),
    );
    common::check_smollm2("your paged_attention", your_paged_attention());
}
