//! Exercise 4: rotary position embedding (RoPE, Su et al. 2021), as Llama applies it.
//!
//! Attention scores are dot products `q·k`; RoPE makes them depend on the *distance* between
//! two tokens by rotating each query and key by an angle proportional to its position. A head
//! vector of `head_dim` values is cut into `head_dim / 2` pairs, each turned like a point in
//! the plane, pair `i` at its own frequency. Which elements form a pair is a convention that
//! must match the weights: Hugging Face Llama ("NeoX" layout) pairs the first half of the head
//! with the second half, not neighbours:
//!
//! ```text
//! head_dim 8:   v[0] v[1] v[2] v[3] | v[4] v[5] v[6] v[7]
//! pairs:        (v[0], v[4])  (v[1], v[5])  (v[2], v[6])  (v[3], v[7])
//!               pair 0 turns fastest, pair 3 slowest
//! ```
//!
//! The cosines and sines are precomputed for every position in `cos_sin_cache`: row `pos`
//! holds the `d/2` cosines then the `d/2` sines of its angles (see
//! `engine::ops::rotary_embedding::cos_sin_cache`). Queries have `num_heads` heads per token
//! and keys `num_kv_heads` (fewer, with grouped-query attention): every head of a token turns
//! by the same angles. The rotation, the contract and an example worked by hand are in the
//! book's Stage 3 chapter, "Rotary embeddings".
//!
//! Test: `cargo test -p stage3 --test rotary_embedding`.

#[cfg(feature = "mutants")]
pub use crate::mutants::rotary_embedding::rotary_embedding;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::ops::rotary_embedding::rotary_embedding;

// HINT: the number of tokens is `positions.len()`; the width of one token's row of `query`
//   (all its heads, one after another) follows from the buffer's length, likewise for `key`.
// HINT: a pair's two new values both depend on both old values.
// HINT: an empty batch (no positions) is legal and changes nothing.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Rotates every head of `query` and `key` in place by its token's position.
pub fn rotary_embedding(
    positions: &[usize], // [num_tokens]
    query: &mut [f32],   // [num_tokens, num_heads, head_dim]
    key: &mut [f32],     // [num_tokens, num_kv_heads, head_dim]
    head_dim: usize,
    cos_sin_cache: &[f32], // [max_position, head_dim]
) {
    todo!(
        "stage3: rotary_embedding in stages/stage3/src/rotary_embedding.rs — turn every \
         head of every token of query and key by the angles of its position (row \
         `position` of cos_sin_cache)"
    )
}
// ANCHOR_END: stub
