//! Writing this step's keys and values into the paged KV cache.
//!
//! Layout of one layer's cache: `[num_blocks, block_size, num_kv_heads, head_dim]`, so a slot
//! (`block * block_size + offset`) is simply a row index. (vLLM's CUDA cache splits the head
//! dimension further for vectorized loads; the slot arithmetic is the same.)

// ANCHOR: reshape_and_cache
/// Copies token `t`'s key and value into row `slot_mapping[t]` of the caches.
pub fn reshape_and_cache(
    key: &[f32],             // [num_tokens, num_kv_heads, head_dim]
    value: &[f32],           // [num_tokens, num_kv_heads, head_dim]
    key_cache: &mut [f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &mut [f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    slot_mapping: &[u64],    // [num_tokens]
) {
    let n = slot_mapping.len();
    if n == 0 {
        return;
    }
    let row = key.len() / n; // num_kv_heads * head_dim
    for (t, &slot) in slot_mapping.iter().enumerate() {
        let dst = slot as usize * row..(slot as usize + 1) * row;
        key_cache[dst.clone()].copy_from_slice(&key[t * row..(t + 1) * row]);
        value_cache[dst].copy_from_slice(&value[t * row..(t + 1) * row]);
    }
}
// ANCHOR_END: reshape_and_cache
