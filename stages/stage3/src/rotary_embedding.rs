//! Exercise 4: rotary position embedding (RoPE, Su et al. 2021), as Llama applies it.
//!
//! Attention scores are dot products `q·k`; RoPE makes them depend on the *distance* between
//! two tokens by rotating each query and key by an angle proportional to its position. A head
//! vector of `head_dim` values is cut into `head_dim / 2` pairs, pair `i` rotating at its own
//! frequency. Hugging Face Llama ("NeoX" layout) pairs element `i` with element `i + d/2`
//! (not neighbours):
//!
//! ```text
//! (x, y) = (v[i], v[i + d/2]),  θ = position · inv_freq[i]
//! x' = x·cos θ − y·sin θ
//! y' = y·cos θ + x·sin θ
//! ```
//!
//! The cosines and sines are precomputed for every position in `cos_sin_cache`: row `pos`
//! holds `d/2` cosines then `d/2` sines (see `engine::ops::rotary_embedding::cos_sin_cache`).
//! Queries have `num_heads` heads per token and keys `num_kv_heads` (fewer, with grouped-query
//! attention): every head of a token rotates by the same angles.
//!
//! Test: `cargo test -p stage3 --test rotary_embedding`.

#[cfg(feature = "reference")]
pub use engine::ops::rotary_embedding::rotary_embedding;

// HINT: the number of tokens is `positions.len()`; a token's row of `query` is
//   `query.len() / num_tokens` values wide (its heads, one after another), likewise for `key`.
//   For each token `t` with position `p`: `row = &cos_sin_cache[p * head_dim..(p + 1) * head_dim]`,
//   `(cos, sin) = row.split_at(head_dim / 2)`; for each head (`chunks_mut(head_dim)` of the
//   token's row) split it at `head_dim / 2` into `(a, b)` and rotate every pair `(a[i], b[i])`.
//   Read both old values before writing either. An empty batch (no positions) does nothing.

/// Rotates every head of `query` and `key` in place by its token's position.
#[cfg(not(feature = "reference"))]
pub fn rotary_embedding(
    positions: &[usize], // [num_tokens]
    query: &mut [f32],   // [num_tokens, num_heads, head_dim]
    key: &mut [f32],     // [num_tokens, num_kv_heads, head_dim]
    head_dim: usize,
    cos_sin_cache: &[f32], // [max_position, head_dim]
) {
    todo!("stage3: rotary_embedding in stages/stage3/src/rotary_embedding.rs — for each token and head, rotate pairs (v[i], v[i + d/2]) by the cos/sin in row `position` of cos_sin_cache")
}
