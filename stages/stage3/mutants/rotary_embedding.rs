//! Plausible wrong rotary embeddings:
//!
//! - `rotary_adjacent_pairs`: rotates neighbours `(v[2i], v[2i + 1])` (GPT-J's interleaved
//!   layout) instead of halves `(v[i], v[i + d/2])` (Hugging Face Llama's, "NeoX").
//! - `rotary_wrong_direction`: `x' = x·cos + y·sin`, `y' = y·cos − x·sin`: turns by −θ.
//! - `rotary_query_only`: rotates the queries and forgets the keys.

use super::active;

/// Rotates every head of every token's row by `turn(pair, cos, sin)`, with the engine's
/// cos/sin rows.
fn rotate_all(
    positions: &[usize],
    x: &mut [f32],
    head_dim: usize,
    cos_sin_cache: &[f32],
    turn: impl Fn(&mut [f32], &[f32], &[f32]),
) {
    if positions.is_empty() {
        return;
    }
    let width = x.len() / positions.len();
    for (row, &p) in x.chunks_mut(width).zip(positions) {
        let (cos, sin) = cos_sin_cache[p * head_dim..(p + 1) * head_dim].split_at(head_dim / 2);
        for head in row.chunks_mut(head_dim) {
            turn(head, cos, sin);
        }
    }
}

pub fn rotary_embedding(
    positions: &[usize], // [num_tokens]
    query: &mut [f32],   // [num_tokens, num_heads, head_dim]
    key: &mut [f32],     // [num_tokens, num_kv_heads, head_dim]
    head_dim: usize,
    cos_sin_cache: &[f32], // [max_position, head_dim]
) {
    if active("rotary_adjacent_pairs") {
        let turn = |head: &mut [f32], cos: &[f32], sin: &[f32]| {
            for (i, pair) in head.chunks_mut(2).enumerate() {
                let (x, y) = (pair[0], pair[1]);
                pair[0] = x * cos[i] - y * sin[i];
                pair[1] = y * cos[i] + x * sin[i];
            }
        };
        rotate_all(positions, query, head_dim, cos_sin_cache, turn);
        rotate_all(positions, key, head_dim, cos_sin_cache, turn);
    } else if active("rotary_wrong_direction") {
        let turn = |head: &mut [f32], cos: &[f32], sin: &[f32]| {
            let (a, b) = head.split_at_mut(head_dim / 2);
            for i in 0..head_dim / 2 {
                let (x, y) = (a[i], b[i]);
                a[i] = x * cos[i] + y * sin[i];
                b[i] = y * cos[i] - x * sin[i];
            }
        };
        rotate_all(positions, query, head_dim, cos_sin_cache, turn);
        rotate_all(positions, key, head_dim, cos_sin_cache, turn);
    } else if active("rotary_query_only") {
        let mut untouched = key.to_vec();
        engine::ops::rotary_embedding::rotary_embedding(
            positions,
            query,
            &mut untouched,
            head_dim,
            cos_sin_cache,
        );
    } else {
        engine::ops::rotary_embedding::rotary_embedding(
            positions,
            query,
            key,
            head_dim,
            cos_sin_cache,
        )
    }
}
