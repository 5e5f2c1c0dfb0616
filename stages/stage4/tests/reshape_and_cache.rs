//! Exercise 3: your reshape_and_cache kernel against the engine's CPU cache write, on random
//! slot mappings with padding rows, then its memory traffic.
//!
//! The caches start as NaN: every slot that no token maps to must still hold NaN (bit for bit)
//! afterwards, and every mapped slot must hold its token's row exactly (a copy, no arithmetic).

mod common;

use common::Kind::{Loads, Stores};
use engine::ops::cache_ops;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use stage4::reshape_and_cache::{reshape_and_cache, CacheShape, PADDING_SLOT};

/// A step's keys, values and slot mapping, over a cache of `num_blocks` blocks.
#[derive(Debug)]
struct Step {
    key: Vec<f32>,
    value: Vec<f32>,
    slots: Vec<u64>,
    shape: CacheShape,
    num_blocks: usize,
}

/// `tokens` tokens in distinct random slots, every fifth one (from `first_padding`) padding.
fn step(tokens: usize, shape: CacheShape, first_padding: usize, seed: u64) -> Step {
    let mut rng = StdRng::seed_from_u64(seed);
    let row = shape.num_kv_heads * shape.head_dim;
    let num_blocks = tokens.div_ceil(shape.block_size) + 2;
    let mut free: Vec<u64> = (0..(num_blocks * shape.block_size) as u64).collect();
    free.shuffle(&mut rng);
    let slots = (0..tokens)
        .map(|t| {
            if t % 5 == first_padding % 5 {
                PADDING_SLOT
            } else {
                free[t]
            }
        })
        .collect();
    let mut values = || {
        (0..tokens * row)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect()
    };
    Step {
        key: values(),
        value: values(),
        slots,
        shape,
        num_blocks,
    }
}

/// The caches after the step: yours (with `threads`), and the engine's (its CPU op on the
/// tokens that are not padding).
fn run(s: &Step, threads: usize) -> ([Vec<f32>; 2], [Vec<f32>; 2], stage4::gpu::LaunchStats) {
    let row = s.shape.num_kv_heads * s.shape.head_dim;
    let size = s.num_blocks * s.shape.block_size * row;
    let (mut kc, mut vc) = (vec![f32::NAN; size], vec![f32::NAN; size]);
    let stats = reshape_and_cache(
        &s.key, &s.value, &mut kc, &mut vc, &s.slots, s.shape, threads,
    );
    let real: Vec<usize> = (0..s.slots.len())
        .filter(|&t| s.slots[t] != PADDING_SLOT)
        .collect();
    let rows = |x: &[f32]| -> Vec<f32> {
        real.iter()
            .flat_map(|&t| x[t * row..][..row].to_vec())
            .collect()
    };
    let slots: Vec<u64> = real.iter().map(|&t| s.slots[t]).collect();
    let (mut ek, mut ev) = (vec![f32::NAN; size], vec![f32::NAN; size]);
    cache_ops::reshape_and_cache(&rows(&s.key), &rows(&s.value), &mut ek, &mut ev, &slots);
    ([kc, vc], [ek, ev], stats)
}

/// The first element where two caches differ in their bits (NaN = NaN here), as a message.
fn compare(
    what: &str,
    s: &Step,
    yours: &[Vec<f32>; 2],
    engine: &[Vec<f32>; 2],
) -> Result<(), String> {
    let row = s.shape.num_kv_heads * s.shape.head_dim;
    for (name, y, e) in [
        ("key_cache", &yours[0], &engine[0]),
        ("value_cache", &yours[1], &engine[1]),
    ] {
        if let Some(i) = (0..y.len()).find(|&i| y[i].to_bits() != e[i].to_bits()) {
            let slot = i / row;
            let token = s.slots.iter().position(|&x| x == slot as u64);
            return Err(format!(
                "{what}: {name}[{i}] (slot {slot}, element {} of its row) is {}, it should be \
                 {} ({})",
                i % row,
                y[i],
                e[i],
                match token {
                    Some(t) => format!("token {t} maps to this slot"),
                    None => "no token maps to this slot: it should be untouched".to_string(),
                }
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn writes_exactly_the_mapped_slots(
        tokens in 1usize..24,
        num_kv_heads in 1usize..4,
        head_dim in prop::sample::select(vec![2usize, 4, 6, 8, 16, 64]),
        block_size in prop::sample::select(vec![1usize, 3, 5, 16]),
        threads in prop::sample::select(vec![32usize, 64, 128]),
        first_padding in 0usize..6,
        seed: u64,
    ) {
        let shape = CacheShape { num_kv_heads, head_dim, block_size };
        let s = step(tokens, shape, first_padding, seed);
        let (yours, engine, _) = run(&s, threads);
        let what = format!(
            "{tokens} tokens, {num_kv_heads} KV heads of {head_dim}, block size {block_size}, \
             {threads} threads, slots {:?}",
            s.slots
        );
        compare(&what, &s, &yours, &engine).map_err(TestCaseError::fail)?;
    }
}

/// By hand: block size 2, one KV head of 2. Token 0 goes to slot 3 (block 1, offset 1),
/// token 1 is padding, token 2 goes to slot 0.
#[test]
fn the_worked_example() {
    let shape = CacheShape {
        num_kv_heads: 1,
        head_dim: 2,
        block_size: 2,
    };
    let key = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let value = key.map(|v| -v);
    let (mut kc, mut vc) = (vec![0.0; 8], vec![0.0; 8]);
    reshape_and_cache(
        &key,
        &value,
        &mut kc,
        &mut vc,
        &[3, PADDING_SLOT, 0],
        shape,
        32,
    );
    assert_eq!(kc, [5.0, 6.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0], "key_cache");
    assert_eq!(
        vc,
        [-5.0, -6.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0],
        "value_cache"
    );
}

/// Two KV heads, block size 4: the heads of one token are neighbours in the cache (the slot is
/// a row of `num_kv_heads · head_dim`), not `block_size` rows apart.
#[test]
fn the_heads_of_a_token_are_one_row() {
    let shape = CacheShape {
        num_kv_heads: 2,
        head_dim: 2,
        block_size: 4,
    };
    let key = [1.0, 2.0, 3.0, 4.0];
    let (mut kc, mut vc) = (vec![0.0; 32], vec![0.0; 32]);
    reshape_and_cache(&key, &key, &mut kc, &mut vc, &[5], shape, 64);
    let mut want = vec![0.0; 32];
    want[20..24].copy_from_slice(&key); // slot 5 = block 1, offset 1: row 5 of 4 values
    assert_eq!(kc, want, "key_cache after writing one token to slot 5");
}

/// A batch of padding only (a graph-sized decode batch with no real row left): nothing moves.
#[test]
fn padding_rows_write_nothing() {
    let shape = CacheShape {
        num_kv_heads: 2,
        head_dim: 8,
        block_size: 4,
    };
    let (mut kc, mut vc) = (vec![f32::NAN; 128], vec![f32::NAN; 128]);
    let key = vec![1.0; 3 * 16];
    let stats = reshape_and_cache(&key, &key, &mut kc, &mut vc, &[PADDING_SLOT; 3], shape, 32);
    assert!(
        kc.iter().chain(&vc).all(|v| v.is_nan()),
        "a padding row wrote into the cache"
    );
    assert_eq!(
        stats.stores().requests,
        0,
        "stores for padding rows\n{stats}"
    );
}

/// Rows a whole number of sectors wide: every load of `key`/`value` and every store into the
/// caches moves only the bytes it asks for.
#[test]
fn copies_are_coalesced() {
    for (heads, head_dim, threads) in [(1, 8, 32), (2, 16, 64), (3, 64, 128), (8, 64, 128)] {
        let shape = CacheShape {
            num_kv_heads: heads,
            head_dim,
            block_size: 16,
        };
        let s = step(13, shape, 2, 7);
        let (yours, engine, stats) = run(&s, threads);
        let what = format!("reshape_and_cache, {heads} KV heads of {head_dim}, {threads} threads");
        compare(&what, &s, &yours, &engine).unwrap();
        common::assert_coalesced(&what, &stats, "key", Loads);
        common::assert_coalesced(&what, &stats, "value", Loads);
        common::assert_coalesced(&what, &stats, "key_cache", Stores);
        common::assert_coalesced(&what, &stats, "value_cache", Stores);
    }
}
