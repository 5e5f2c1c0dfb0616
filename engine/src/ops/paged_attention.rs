//! Causal attention whose keys and values are read from the paged KV cache through each
//! sequence's block table.

use rayon::prelude::*;

use super::linear::dot;
use crate::attention::attention_metadata::AttentionMetadata;

// ANCHOR: paged_attention
#[allow(clippy::too_many_arguments)] // mirrors the CUDA kernel's signature
/// For each query token, attends over its sequence's cached tokens up to and including its
/// own position. Query head `h` uses KV head `h / (num_heads / num_kv_heads)` (GQA).
pub fn paged_attention(
    out: &mut [f32],     // [num_tokens, num_heads, head_dim]
    query: &[f32],       // [num_tokens, num_heads, head_dim]
    key_cache: &[f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &[f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    meta: &AttentionMetadata,
) {
    let num_tokens = meta.num_tokens();
    if num_tokens == 0 {
        return;
    }
    let width = query.len() / num_tokens; // num_heads * head_dim
    let num_heads = width / head_dim;
    let group = num_heads / num_kv_heads;
    let kv_row = num_kv_heads * head_dim;

    // Which sequence, and which position, each query row belongs to.
    let mut row_info = Vec::with_capacity(num_tokens);
    for s in 0..meta.num_seqs() {
        let (start, end) = (meta.query_start_loc[s], meta.query_start_loc[s + 1]);
        let first_pos = meta.seq_lens[s] - (end - start);
        row_info.extend((0..end - start).map(|j| (s, first_pos + j)));
    }

    out.par_chunks_mut(head_dim).enumerate().for_each(|(i, o)| {
        let (t, h) = (i / num_heads, i % num_heads);
        let (s, pos) = row_info[t];
        let q = &query[t * width + h * head_dim..][..head_dim];
        let table = meta.block_table(s);
        let kv_offset = (h / group) * head_dim;
        let row_of = |p: usize| {
            let slot = table[p / meta.block_size] as usize * meta.block_size + p % meta.block_size;
            slot * kv_row + kv_offset
        };
        // Scores for keys 0..=pos, then a numerically stable softmax.
        let mut scores: Vec<f32> = (0..=pos)
            .map(|p| dot(q, &key_cache[row_of(p)..][..head_dim]) * scale)
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (p, &w) in scores.iter().enumerate() {
            let v = &value_cache[row_of(p)..][..head_dim];
            for (o, &v) in o.iter_mut().zip(v) {
                *o += w * v;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|o| *o *= inv);
    });
}
// ANCHOR_END: paged_attention
