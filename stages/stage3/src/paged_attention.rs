//! Exercise 5: paged attention, the kernel that reads keys and values through block tables
//! (vLLM's `paged_attention` / `unified_attention`).
//!
//! A batch is every scheduled sequence's new tokens, one query row each. Row `t` of sequence
//! `s` is at position `p` of that sequence, and attends causally to the sequence's keys and
//! values at positions `0..=p`. They are not in a contiguous buffer: position `k` is in cache
//! slot `block_table[k / block_size] * block_size + k % block_size`, wherever the allocator
//! put its block. For each query head `h`:
//!
//! ```text
//! score[k] = (q_h · key[k]) * scale               for k in 0..=p
//! w        = softmax(score)                       (subtract the max before exp)
//! out_h    = Σ_k w[k] * value[k]
//! ```
//!
//! where `key[k]` and `value[k]` are those of KV head `h / (num_heads / num_kv_heads)` (GQA:
//! consecutive query heads share a KV head).
//!
//! Which sequence owns row `t`: the `s` with `query_start_loc[s] <= t < query_start_loc[s + 1]`.
//! Its position: the sequence's query rows are the last of its `seq_lens[s]` cached tokens,
//! so row `query_start_loc[s] + j` is at position `seq_lens[s] - query_len + j`. A decode
//! (query length 1) is at position `seq_lens[s] - 1`; a prefill chunk's first row attends to
//! the cached prefix and itself, its last row to everything.
//!
//! Test: `cargo test -p stage3 --test paged_attention`.

#[cfg(not(feature = "reference"))]
use engine::attention::attention_metadata::AttentionMetadata;

#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::ops::paged_attention::paged_attention;

#[cfg(feature = "mutants")]
pub use crate::mutants::paged_attention::paged_attention;

// HINT: sizes first: `num_tokens = meta.num_tokens()`, `num_heads = query.len() / num_tokens
//   / head_dim`, `group = num_heads / num_kv_heads`, and one cache row (one slot) is
//   `num_kv_heads * head_dim` floats. Then loop: sequence `s` → its rows → heads `h`. Key `k`
//   of KV head `kvh` starts at `slot * num_kv_heads * head_dim + kvh * head_dim`, with `slot`
//   from `meta.block_table(s)` exactly as in your `slot_for_position` (don't go past
//   `seq_lens`: the table is padded with block 0). Keep the scores of one head in a Vec, take
//   their max `m`, `w[k] = exp(score[k] - m)`, and divide the weighted sum of values by `Σ w`.
//   Write every element of `out` (the tests fill it with NaN first).
// Going further: the engine gives one rayon task to each (token, KV head) pair, so the query
//   heads of a group read each cached key once.

#[cfg(not(feature = "reference"))]
// ANCHOR: paged_attention
/// Causal attention of every query row over its sequence's cached keys and
/// values, read through the block tables in `meta`. Writes all of `out`.
#[allow(clippy::too_many_arguments)] // the engine's kernel signature
pub fn paged_attention(
    out: &mut [f32],     // [num_tokens, num_heads, head_dim]
    query: &[f32],       // [num_tokens, num_heads, head_dim]
    key_cache: &[f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &[f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32, // 1 / sqrt(head_dim)
    meta: &AttentionMetadata,
) {
    todo!(
        "stage3: paged_attention in stages/stage3/src/paged_attention.rs — \
         for each row at position p and head h: softmax(scale · q_h · k) \
         over keys 0..=p of KV head h / group, read through the block \
         table; out = the weighted sum of values"
    )
}
// ANCHOR_END: paged_attention
