//! Plausible wrong decode-attention kernels:
//!
//! - `decode_kv_head_modulo`: query head `h` reads KV head `h % num_kv_heads` instead of
//!   `h / group` (interleaved groups instead of consecutive ones).
//! - `decode_no_max_subtraction`: `exp(score)` without subtracting the maximum first; fine
//!   for small scores, infinite (then NaN) for scores past 88.
//! - `decode_thread_per_token`: the scores with one thread per key, looping over `head_dim`:
//!   the right numbers, but the 32 lanes of a warp read 32 different key rows.
//! - `decode_whole_blocks`: walks every slot of the sequence's blocks, the unused end of its
//!   last block included.

use super::active;
use crate::block_reduce::{block_max, block_sum};
use crate::gpu::{
    block_dim, block_idx, grid_dim, shared, sync_threads, thread_idx, warp_sum, Global, WARP_SIZE,
};
use crate::paged_attention::DecodeShape;
use crate::reference::paged_attention as reference;

pub async fn paged_attention_decode_kernel(
    out: &Global<f32>,          // [num_seqs, num_heads, head_dim]
    query: &Global<f32>,        // [num_seqs, num_heads, head_dim]
    key_cache: &Global<f32>,    // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &Global<f32>,  // [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: &Global<u32>, // [num_seqs, max_blocks_per_seq]
    seq_lens: &Global<u32>,     // [num_seqs]
    shape: DecodeShape,
) {
    let modulo = active("decode_kv_head_modulo");
    let no_max = active("decode_no_max_subtraction");
    let per_token = active("decode_thread_per_token");
    let whole_blocks = active("decode_whole_blocks");
    if !(modulo || no_max || per_token || whole_blocks) {
        return reference::paged_attention_decode_kernel(
            out,
            query,
            key_cache,
            value_cache,
            block_tables,
            seq_lens,
            shape,
        )
        .await;
    }
    let DecodeShape {
        num_kv_heads,
        head_dim,
        block_size,
        max_blocks_per_seq,
        max_seq_len,
        scale,
    } = shape;
    let (head, seq) = (block_idx().x, block_idx().y);
    let num_heads = grid_dim().x;
    let kv_head = if modulo {
        head % num_kv_heads
    } else {
        head / (num_heads / num_kv_heads)
    };
    let mut seq_len = seq_lens.load(seq) as usize;
    if whole_blocks {
        seq_len = seq_len.div_ceil(block_size) * block_size;
    }
    let (tid, threads) = (thread_idx().x, block_dim().x);
    let (warp, lane, num_warps) = (tid / WARP_SIZE, tid % WARP_SIZE, threads / WARP_SIZE);
    let q_row = (seq * num_heads + head) * head_dim;
    let kv_row = |j: usize| {
        let block = block_tables.load(seq * max_blocks_per_seq + j / block_size) as usize;
        ((block * block_size + j % block_size) * num_kv_heads + kv_head) * head_dim
    };
    let scores = shared::<f32>(max_seq_len.div_ceil(block_size) * block_size);

    if per_token {
        let mut j = tid;
        while j < seq_len {
            let k = kv_row(j);
            let mut dot = 0.0f32;
            for d in 0..head_dim {
                dot += query.load(q_row + d) * key_cache.load(k + d);
            }
            scores.set(j, dot * scale);
            j += threads;
        }
    } else {
        let mut j = warp;
        while j < seq_len {
            let k = kv_row(j);
            let mut dot = 0.0f32;
            let mut d = lane;
            while d < head_dim {
                dot += query.load(q_row + d) * key_cache.load(k + d);
                d += WARP_SIZE;
            }
            let dot = warp_sum(dot).await;
            if lane == 0 {
                scores.set(j, dot * scale);
            }
            j += num_warps;
        }
    }
    sync_threads().await;

    let mut max = f32::NEG_INFINITY;
    let mut j = tid;
    while j < seq_len {
        max = max.max(scores.get(j));
        j += threads;
    }
    let max = if no_max { 0.0 } else { block_max(max).await };
    let mut sum = 0.0f32;
    let mut j = tid;
    while j < seq_len {
        let p = (scores.get(j) - max).exp();
        scores.set(j, p);
        sum += p;
        j += threads;
    }
    let inv_sum = 1.0 / block_sum(sum).await;

    let mut d = tid;
    while d < head_dim {
        let mut acc = 0.0f32;
        for j in 0..seq_len {
            acc += scores.get(j) * value_cache.load(kv_row(j) + d);
        }
        out.store(q_row + d, acc * inv_sum);
        d += threads;
    }
}
