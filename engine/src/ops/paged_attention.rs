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

    // One task per (token, KV head): the `group` query heads that share a KV head read each
    // cached key and value once, from the block table, block by block.
    let tasks = out.par_chunks_mut(group * head_dim).enumerate();
    tasks.for_each_init(Vec::new, |scores: &mut Vec<f32>, (i, o)| {
        let (t, kvh) = (i / num_kv_heads, i % num_kv_heads);
        let (s, pos) = row_info[t];
        let table = meta.block_table(s);
        let q = &query[t * width + kvh * group * head_dim..][..group * head_dim];
        let kv_offset = kvh * head_dim;
        let num_keys = pos + 1; // causal: keys 0..=pos

        // Cache row of each key position, following the block table.
        let b = meta.block_size;
        let rows = (0..num_keys).map(|p| {
            let slot = table[p / b] as usize * b + p % b;
            slot * kv_row + kv_offset
        });
        // scores[p * group + g] = q_g · k_p * scale
        scores.clear();
        for row in rows.clone() {
            let k = &key_cache[row..][..head_dim];
            scores.extend(q.chunks_exact(head_dim).map(|qg| dot(qg, k) * scale));
        }
        // Softmax per query head, numerically stable (subtract the max).
        let mut sums = vec![0.0f32; group];
        let mut maxes = vec![f32::NEG_INFINITY; group];
        for (j, &v) in scores.iter().enumerate() {
            maxes[j % group] = maxes[j % group].max(v);
        }
        for (j, v) in scores.iter_mut().enumerate() {
            *v = (*v - maxes[j % group]).exp();
            sums[j % group] += *v;
        }
        o.fill(0.0);
        for (p, row) in rows.enumerate() {
            let v = &value_cache[row..][..head_dim];
            for (g, og) in o.chunks_exact_mut(head_dim).enumerate() {
                let w = scores[p * group + g];
                og.iter_mut().zip(v).for_each(|(o, &v)| *o += w * v);
            }
        }
        for (g, og) in o.chunks_exact_mut(head_dim).enumerate() {
            let inv = 1.0 / sums[g];
            og.iter_mut().for_each(|o| *o *= inv);
        }
    });
}
// ANCHOR_END: paged_attention
