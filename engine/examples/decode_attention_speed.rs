//! Decode attention on the CPU, alone: `SEQS` sequences (default 8) of `CONTEXT` cached tokens
//! (default 192), one query token each, SmolLM2-135M's heads (9 query heads over 3 KV heads of
//! 64), blocks of 16 handed out sequence by sequence. Each version of the inner loops this CPU
//! has (`ops::attention_simd::Simd`) runs 200 calls on one layer's cache, alternated over 20
//! rounds (the cache stays in L2: this times the loops, not memory), median and best µs per
//! call printed.
//!
//! `cargo run --release -p engine --example decode_attention_speed [-- CONTEXT SEQS]`
use std::time::Instant;

use engine::attention::attention_metadata::AttentionMetadata;
use engine::ops::attention_simd::Simd;
use engine::ops::paged_attention::paged_attention_with;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let ctx = args.next().flatten().unwrap_or(192).max(1);
    let seqs = args.next().flatten().unwrap_or(8).max(1);
    let (kv_heads, group, d, bs) = (3usize, 3usize, 64usize, 16usize);
    let per_seq = ctx.div_ceil(bs);
    let kv_row = kv_heads * d;
    let blocks = seqs * per_seq;
    let value = |i: usize, m: usize| ((i * m) % 1000) as f32 * 0.002 - 1.0;
    let k: Vec<f32> = (0..blocks * bs * kv_row).map(|i| value(i, 7919)).collect();
    let v: Vec<f32> = (0..blocks * bs * kv_row)
        .map(|i| value(i, 104729))
        .collect();
    let q: Vec<f32> = (0..seqs * kv_heads * group * d)
        .map(|i| value(i, 31))
        .collect();
    let block_tables: Vec<u32> = (0..blocks as u32).collect();
    let slot = |s: usize, p: usize| block_tables[s * per_seq + p / bs] as usize * bs + p % bs;
    let meta = AttentionMetadata {
        slot_mapping: (0..seqs).map(|s| slot(s, ctx - 1) as u64).collect(),
        query_start_loc: (0..=seqs).collect(),
        seq_lens: vec![ctx; seqs],
        block_tables,
        max_blocks_per_seq: per_seq,
        block_size: bs,
    };
    let scale = 1.0 / (d as f32).sqrt();
    let versions = Simd::available(d);
    let mut us = vec![Vec::new(); versions.len()];
    let mut out = vec![0.0; q.len()];
    let calls = 200;
    for round in 0..20 {
        let i = round % versions.len();
        let t = Instant::now();
        for _ in 0..calls {
            paged_attention_with(versions[i], &mut out, &q, &k, &v, kv_heads, d, scale, &meta);
            std::hint::black_box(&mut out);
        }
        us[i].push(t.elapsed().as_secs_f64() / calls as f64 * 1e6);
    }
    println!(
        "decode attention, {seqs} sequences of {ctx} tokens, 9 query heads over 3 KV heads of \
         64, {} threads:",
        rayon::current_num_threads()
    );
    for (version, us) in versions.iter().zip(&mut us) {
        us.sort_by(f64::total_cmp);
        let pairs = (seqs * ctx * kv_heads * group) as f64;
        println!(
            "{version:?}: median {:.1} µs a call (best {:.1}), {:.2} ns per (head, key) pair",
            us[us.len() / 2],
            us[0],
            us[us.len() / 2] * 1e3 / pairs
        );
    }
}
