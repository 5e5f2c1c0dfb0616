//! Decode attention, one block per (head, sequence): a warp per key for the scores, block
//! reductions for the softmax, a thread per dimension for the weighted sum of values.

use crate::block_reduce::{block_max, block_sum};
use crate::gpu::{
    block_dim, block_idx, grid_dim, shared, sync_threads, thread_idx, warp_sum, Global, WARP_SIZE,
};
use crate::paged_attention::DecodeShape;

// ANCHOR: paged_attention_decode_kernel
/// One block per (query head `block_idx().x`, sequence `block_idx().y`): attention of the
/// sequence's decode row over its `seq_lens[seq]` cached tokens, into `out[seq][head]`.
pub async fn paged_attention_decode_kernel(
    out: &Global<f32>,          // [num_seqs, num_heads, head_dim]
    query: &Global<f32>,        // [num_seqs, num_heads, head_dim]
    key_cache: &Global<f32>,    // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &Global<f32>,  // [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables: &Global<u32>, // [num_seqs, max_blocks_per_seq]
    seq_lens: &Global<u32>,     // [num_seqs]
    shape: DecodeShape,
) {
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
    let kv_head = head / (num_heads / num_kv_heads);
    let seq_len = seq_lens.load(seq) as usize;
    let (tid, threads) = (thread_idx().x, block_dim().x);
    let (warp, lane, num_warps) = (tid / WARP_SIZE, tid % WARP_SIZE, threads / WARP_SIZE);
    let q_row = (seq * num_heads + head) * head_dim;
    // Where key/value `j` of this KV head starts in the cache.
    let kv_row = |j: usize| {
        let block = block_tables.load(seq * max_blocks_per_seq + j / block_size) as usize;
        ((block * block_size + j % block_size) * num_kv_heads + kv_head) * head_dim
    };
    let scores = shared::<f32>(max_seq_len);

    // 1. Scores: warp w takes keys w, w + num_warps, ...; its lanes split the dot product,
    //    so each load instruction reads neighbouring floats of one key row.
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
    sync_threads().await;

    // 2. Softmax: the maximum first, so that exp never overflows.
    let mut max = f32::NEG_INFINITY;
    let mut j = tid;
    while j < seq_len {
        max = max.max(scores.get(j));
        j += threads;
    }
    let max = block_max(max).await;
    let mut sum = 0.0f32;
    let mut j = tid;
    while j < seq_len {
        let p = (scores.get(j) - max).exp();
        scores.set(j, p);
        sum += p;
        j += threads;
    }
    let inv_sum = 1.0 / block_sum(sum).await; // its barriers also publish the p's

    // 3. Weighted sum of values: thread d owns output dimension d.
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
// ANCHOR_END: paged_attention_decode_kernel
