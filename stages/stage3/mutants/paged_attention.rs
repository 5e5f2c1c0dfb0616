//! Plausible wrong paged attention kernels. Each is the engine's kernel run on inputs bent so
//! that it makes the mistake (no second implementation to keep in step):
//!
//! - `paged_attention_no_causal_mask`: every row of a prefill chunk attends to the whole
//!   sequence, positions after its own included.
//! - `paged_attention_kv_head_modulo`: query head `h` reads KV head `h % num_kv_heads` instead
//!   of `h / group` (interleaved instead of consecutive groups).
//! - `paged_attention_no_scale`: scores are not multiplied by `1 / sqrt(head_dim)`.
//! - `paged_attention_query_block_for_every_key`: every key is read from the block of the
//!   query's own position (for a decode, the last block of the table) at offset
//!   `k % block_size`: the block looked up once instead of per key.

use engine::attention::attention_metadata::AttentionMetadata;
use engine::ops::paged_attention as engine_kernel;

use super::active;

#[allow(clippy::too_many_arguments)] // the engine's kernel signature
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
    let kernel = |out: &mut [f32], query: &[f32], scale: f32, meta: &AttentionMetadata| {
        engine_kernel::paged_attention(
            out,
            query,
            key_cache,
            value_cache,
            num_kv_heads,
            head_dim,
            scale,
            meta,
        )
    };
    if active("paged_attention_no_causal_mask") {
        // Each row becomes a decode of the whole sequence: it sees all `seq_len` keys.
        let m = one_row_per_sequence(meta, |seq_len, _pos, table| (seq_len, table.to_vec()));
        kernel(out, query, scale, &m);
    } else if active("paged_attention_kv_head_modulo") {
        // The engine computes head h' from KV head h' / group; feed it query head h as
        // h' = (h % kv) * group + h / kv, whose KV head is h % kv, and read the output back.
        let num_tokens = meta.num_tokens();
        if num_tokens == 0 {
            return;
        }
        let num_heads = query.len() / num_tokens / head_dim;
        let group = num_heads / num_kv_heads;
        let moved = |h: usize| (h % num_kv_heads) * group + h / num_kv_heads;
        let mut q = vec![0.0; query.len()];
        for t in 0..num_tokens {
            for h in 0..num_heads {
                let (from, to) = (t * num_heads + h, t * num_heads + moved(h));
                q[to * head_dim..][..head_dim]
                    .copy_from_slice(&query[from * head_dim..][..head_dim]);
            }
        }
        let mut o = vec![0.0; out.len()];
        kernel(&mut o, &q, scale, meta);
        for t in 0..num_tokens {
            for h in 0..num_heads {
                let (to, from) = (t * num_heads + h, t * num_heads + moved(h));
                out[to * head_dim..][..head_dim].copy_from_slice(&o[from * head_dim..][..head_dim]);
            }
        }
    } else if active("paged_attention_no_scale") {
        kernel(out, query, 1.0, meta);
    } else if active("paged_attention_query_block_for_every_key") {
        // Each row becomes a sequence of its own, whose table repeats the query's block.
        let b = meta.block_size;
        let m = one_row_per_sequence(meta, |_seq_len, pos, table| {
            (pos + 1, vec![table[pos / b]; table.len()])
        });
        kernel(out, query, scale, &m);
    } else {
        kernel(out, query, scale, meta);
    }
}

/// The same query rows, each made a sequence of its own (query length 1) whose length and
/// block table `f(seq_len, position, table)` chooses from its sequence's.
fn one_row_per_sequence(
    meta: &AttentionMetadata,
    f: impl Fn(usize, usize, &[u32]) -> (usize, Vec<u32>),
) -> AttentionMetadata {
    let mut m = AttentionMetadata {
        slot_mapping: meta.slot_mapping.clone(),
        query_start_loc: vec![0],
        block_size: meta.block_size,
        max_blocks_per_seq: meta.max_blocks_per_seq,
        ..AttentionMetadata::default()
    };
    for s in 0..meta.num_seqs() {
        let (start, end) = (meta.query_start_loc[s], meta.query_start_loc[s + 1]);
        let seq_len = meta.seq_lens[s];
        for t in start..end {
            let pos = seq_len - (end - t);
            let (len, table) = f(seq_len, pos, meta.block_table(s));
            m.seq_lens.push(len);
            m.block_tables.extend(table);
            m.query_start_loc.push(t + 1);
        }
    }
    m
}
