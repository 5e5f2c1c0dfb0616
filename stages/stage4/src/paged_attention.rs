//! Exercise 4: one decode step of paged attention as a GPU kernel (vLLM's
//! `paged_attention_v1`; the engine's, much faster and more involved, is
//! kernels/cuda/paged_attention.cu).
//!
//! A decode row is one new token of a sequence, at position `seq_len − 1`, whose key and value
//! `reshape_and_cache` has already written: it attends to all `seq_len` cached tokens. The
//! math is stage 3's paged attention restricted to decode rows; what is new is the split of
//! work. One block takes one (query head, sequence) pair: `block_idx().x` is the head,
//! `block_idx().y` the sequence. Its threads
//!
//! 1. compute the scores `scale · q · k[j]` for `j` in `0..seq_len`, each key found through
//!    the block table, into a shared array (a block cannot keep them in one thread's registers);
//! 2. find their maximum and the sum of `exp(score − max)` with your block reductions;
//! 3. compute `out[d] = Σ_j p[j] · v[j][d] / Σ_j p[j]`.
//!
//! Query head `h` reads KV head `h / (num_heads / num_kv_heads)` (GQA), and `num_heads` is
//! `grid_dim().x`.
//!
//! The memory lesson is in step 1. A key row is `head_dim` contiguous floats; the tests require
//! every load of `key_cache` and of `value_cache` to move only the bytes it asks for (100%
//! efficiency, on head sizes that are a whole number of sectors). Giving each thread a token and
//! looping over `d` makes the 32 lanes of a warp read 32 different key rows, one sector each:
//! right numbers, a fraction of the bandwidth.
//!
//! Test: `cargo test -p stage4 --test paged_attention` (uses your exercise 1).

use engine::attention::attention_metadata::AttentionMetadata;

use crate::gpu::{launch, Global, LaunchConfig, LaunchStats};
#[cfg(not(feature = "reference"))]
use crate::{
    block_reduce::{block_max, block_sum},
    gpu::{block_dim, block_idx, grid_dim, shared, sync_threads, thread_idx, warp_sum, WARP_SIZE},
};

#[cfg(feature = "mutants")]
pub use crate::mutants::paged_attention::paged_attention_decode_kernel;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use crate::reference::paged_attention::paged_attention_decode_kernel;

// ANCHOR: shape
/// The sizes a decode launch needs besides its buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeShape {
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    /// Columns of `block_tables`.
    pub max_blocks_per_seq: usize,
    /// The longest `seq_len` of the batch: the length to give the shared array of scores.
    pub max_seq_len: usize,
    /// `1 / sqrt(head_dim)`.
    pub scale: f32,
}
// ANCHOR_END: shape

// HINT: step 1 with one *warp* per token: lane `l` takes dims `l`, `l + 32`, ... of q·k[j],
//   `warp_sum` adds them up, lane 0 stores the score. Warp `w` of `n` takes tokens `w`,
//   `w + n`, ... Then a barrier: steps 2 and 3 read scores other warps wrote.
// HINT: key `j` of KV head `kvh` starts at
//   `((table[j / block_size] · block_size + j % block_size) · num_kv_heads + kvh) · head_dim`,
//   with `table` the sequence's row of `block_tables`. Never read past `seq_len`: the last
//   block is partly empty, and the cache slots no one wrote hold NaN in the tests.
// HINT: step 2: a thread with no score to look at contributes `-inf` to the max and 0 to the
//   sum. Why must the maximum be subtracted before `exp`? (Scores of 100 are not rare.)
// HINT: step 3 with one thread per dim `d`: lanes read neighbouring floats of each value row.
// Going further: vLLM's v1 kernel gives each key to a "thread group" that loads 16 bytes per
//   lane, and its v2 splits long contexts over several blocks (split-K); the engine's kernel
//   streams tiles of 32 keys into shared memory with cp.async.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
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
    todo!(
        "stage4: paged_attention_decode_kernel in stages/stage4/src/paged_attention.rs — \
         scores of q against every cached key (a warp per key, lanes across head_dim) into \
         shared memory, block_max and block_sum for the softmax, then out[d] = Σ p · v[d] / Σ p \
         (a thread per d)"
    )
}
// ANCHOR_END: stub

// ANCHOR: host
/// The host side (given), with the engine's paged-attention signature for a batch of decode
/// rows (one query row per sequence): launches a grid of (num_heads, num_seqs) blocks of
/// `threads` threads and returns what it moved. `out` starts as NaN on the device.
#[allow(clippy::too_many_arguments)] // the engine's kernel signature, and `threads`
pub fn paged_attention_decode(
    out: &mut [f32],     // [num_seqs, num_heads, head_dim]
    query: &[f32],       // [num_seqs, num_heads, head_dim]
    key_cache: &[f32],   // [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: &[f32], // [num_blocks, block_size, num_kv_heads, head_dim]
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    meta: &AttentionMetadata,
    threads: usize,
) -> LaunchStats {
    let num_seqs = meta.num_seqs();
    assert!(
        (0..=num_seqs).all(|s| meta.query_start_loc[s] == s),
        "paged_attention_decode takes decode rows only: one query row per sequence"
    );
    if num_seqs == 0 {
        return LaunchStats::default();
    }
    let num_heads = query.len() / num_seqs / head_dim;
    let shape = DecodeShape {
        num_kv_heads,
        head_dim,
        block_size: meta.block_size,
        max_blocks_per_seq: meta.max_blocks_per_seq,
        max_seq_len: meta.seq_lens.iter().copied().max().unwrap_or(0),
        scale,
    };
    let seq_lens: Vec<u32> = meta.seq_lens.iter().map(|&n| n as u32).collect();
    let d_out = Global::filled("out", out.len(), f32::NAN);
    let query = Global::from_slice("query", query);
    let key_cache = Global::from_slice("key_cache", key_cache);
    let value_cache = Global::from_slice("value_cache", value_cache);
    let block_tables = Global::from_slice("block_tables", &meta.block_tables);
    let seq_lens = Global::from_slice("seq_lens", &seq_lens);
    let config = LaunchConfig::new((num_heads, num_seqs), threads);
    let stats = launch("paged_attention_decode", config, || {
        paged_attention_decode_kernel(
            &d_out,
            &query,
            &key_cache,
            &value_cache,
            &block_tables,
            &seq_lens,
            shape,
        )
    });
    out.copy_from_slice(&d_out.to_vec());
    stats
}
// ANCHOR_END: host
