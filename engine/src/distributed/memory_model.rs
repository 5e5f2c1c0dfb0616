//! What one GPU holds when a model is split by tensor parallelism (TP, each layer's matrices cut
//! across ranks) and pipeline parallelism (PP, the layers cut into consecutive stages): its
//! shard of the weights, the KV cache of its layers and heads, and the room the cache gets.
//!
//! Every count follows the sharding vLLM does (and issue 9 asks the engine to do): q/k/v
//! column-parallel by heads, o_proj row-parallel, gate/up column-parallel, down row-parallel,
//! embedding and LM head vocab-parallel, norms replicated. All on-GPU tensors are bf16.

use crate::config::ModelConfig;

/// Bytes of one bf16 value (weights, KV cache and activations on the GPU).
pub const BF16_BYTES: u64 = 2;

/// Bytes set aside per GPU for what is not a tensor of ours: the CUDA context, cuBLAS's
/// workspace and NCCL's buffers. An allowance (vLLM measures it by profiling; we have not
/// measured it per TP size), not a figure from our runs.
pub const RUNTIME_RESERVE_BYTES: u64 = 512 << 20;

// ANCHOR: tp_split_error
/// Why `tp` ranks cannot split this model's layers, or `None` when they can. The query heads
/// must divide evenly; KV heads either divide evenly or, when there are fewer KV heads than
/// ranks, each is replicated on `tp / kv_heads` ranks (which then must be whole); the MLP's
/// intermediate width must divide evenly too. These are vLLM's rules.
pub fn tp_split_error(c: &ModelConfig, tp: usize) -> Option<String> {
    let (heads, kv) = (c.num_attention_heads, c.num_key_value_heads);
    if tp == 0 {
        Some("TP size must be at least 1".into())
    } else if !heads.is_multiple_of(tp) {
        Some(format!("{heads} query heads do not divide by TP={tp}"))
    } else if kv >= tp && !kv.is_multiple_of(tp) {
        Some(format!("{kv} KV heads do not divide by TP={tp}"))
    } else if kv < tp && !tp.is_multiple_of(kv) {
        Some(format!(
            "TP={tp} is not a multiple of the {kv} KV heads it would replicate"
        ))
    } else if !c.intermediate_size.is_multiple_of(tp) {
        let i = c.intermediate_size;
        Some(format!("intermediate size {i} does not divide by TP={tp}"))
    } else {
        None
    }
}
// ANCHOR_END: tp_split_error

// ANCHOR: kv_heads_per_rank
/// KV heads one TP rank holds: its share when there are at least as many KV heads as ranks,
/// else one (each KV head replicated on `tp / kv_heads` ranks, as vLLM does), so the KV cache
/// stops shrinking once TP passes the KV head count.
pub fn kv_heads_per_rank(num_kv_heads: usize, tp: usize) -> usize {
    (num_kv_heads / tp).max(1)
}
// ANCHOR_END: kv_heads_per_rank

/// Layers of each pipeline stage, split as vLLM's `get_pp_indices`: `layers / pp` each, and the
/// remainder one apiece to the stages before the last, counted back from the second-to-last
/// (the last stage already carries the final norm and the LM head). Needs `1 <= pp <= layers`.
pub fn layers_per_stage(layers: usize, pp: usize) -> Vec<usize> {
    let mut stages = vec![layers / pp; pp];
    for i in 0..layers % pp {
        stages[pp - 2 - i] += 1;
    }
    stages
}

/// Rows of the vocabulary one rank holds in a vocab-parallel embedding or LM head: the
/// vocabulary cut into `tp` equal ranges, the last padded (vocab / TP rounded up).
pub fn vocab_rows_per_rank(vocab_size: usize, tp: usize) -> usize {
    vocab_size.div_ceil(tp)
}

// ANCHOR: layer_params_per_rank
/// Parameters of one decoder layer on one TP rank: its heads' columns of q/k/v (KV heads as
/// [`kv_heads_per_rank`]), its rows of o_proj, its `intermediate / tp` slice of gate, up and
/// down, and both RMSNorm weights (replicated: every rank normalizes the whole hidden vector).
pub fn layer_params_per_rank(c: &ModelConfig, tp: usize) -> u64 {
    let (h, d) = (c.hidden_size as u64, c.head_dim as u64);
    let q = (c.num_attention_heads / tp) as u64 * d;
    let kv = kv_heads_per_rank(c.num_key_value_heads, tp) as u64 * d;
    let i = (c.intermediate_size / tp) as u64;
    let bias = if c.attention_bias { q + 2 * kv } else { 0 };
    h * (q + 2 * kv) + bias + q * h + 3 * h * i + 2 * h
}
// ANCHOR_END: layer_params_per_rank

// ANCHOR: weight_bytes_per_gpu
/// bf16 bytes of weights on one GPU of a stage with `layers` layers: the layers' TP shards, the
/// embedding's vocab shard on the first stage, the final norm and the LM head's vocab shard on
/// the last. A tied LM head is the embedding matrix: stored once when one stage is both first
/// and last, but the last stage needs its own copy when PP > 1.
pub fn weight_bytes_per_gpu(
    c: &ModelConfig,
    tp: usize,
    layers: usize,
    first: bool,
    last: bool,
) -> u64 {
    let table = (vocab_rows_per_rank(c.vocab_size, tp) * c.hidden_size) as u64;
    let mut params = layers as u64 * layer_params_per_rank(c, tp);
    if first {
        params += table;
    }
    if last {
        params += c.hidden_size as u64; // final norm
        if !(first && c.tie_word_embeddings) {
            params += table; // LM head
        }
    }
    params * BF16_BYTES
}
// ANCHOR_END: weight_bytes_per_gpu

// ANCHOR: stage_weight_bytes_per_gpu
/// bf16 bytes of weights on one GPU of each pipeline stage of a `tp × pp` split, in stage order:
/// the stage's layers as [`layers_per_stage`], the embedding on stage 0, the final norm and LM
/// head on stage `pp − 1` (see [`weight_bytes_per_gpu`]). Needs `1 <= pp <= layers`.
pub fn stage_weight_bytes_per_gpu(c: &ModelConfig, tp: usize, pp: usize) -> Vec<u64> {
    let stages = layers_per_stage(c.num_hidden_layers, pp);
    (stages.iter().enumerate())
        .map(|(s, &l)| weight_bytes_per_gpu(c, tp, l, s == 0, s == pp - 1))
        .collect()
}
// ANCHOR_END: stage_weight_bytes_per_gpu

// ANCHOR: kv_bytes_per_token_per_gpu
/// bf16 bytes one token of context takes in one GPU's KV cache: K and V, for each of its
/// stage's `layers`, for each KV head its rank holds, `head_dim` values each.
pub fn kv_bytes_per_token_per_gpu(c: &ModelConfig, tp: usize, layers: usize) -> u64 {
    let heads = kv_heads_per_rank(c.num_key_value_heads, tp) as u64;
    2 * layers as u64 * heads * c.head_dim as u64 * BF16_BYTES
}
// ANCHOR_END: kv_bytes_per_token_per_gpu

/// Bytes one GPU keeps for a step's activations (our definition of the reserve): for each of
/// `max_batched_tokens` tokens the bf16 residual stream, normed hidden state and all-reduce
/// buffer (3 × hidden), the rank's q/k/v, attention output and gate/up/product widths; f32
/// logits over the whole vocabulary for `max_seqs` sampled rows (gathered before sampling);
/// all doubled for allocator slack (as the CUDA backend's budget does), plus
/// [`RUNTIME_RESERVE_BYTES`].
pub fn activation_reserve_bytes(
    c: &ModelConfig,
    tp: usize,
    max_batched_tokens: usize,
    max_seqs: usize,
) -> u64 {
    let d = c.head_dim;
    let q = c.num_attention_heads / tp * d;
    let kv = kv_heads_per_rank(c.num_key_value_heads, tp) * d;
    let per_token = 3 * c.hidden_size + (q + 2 * kv) + q + 3 * (c.intermediate_size / tp);
    let tokens = (max_batched_tokens * per_token) as u64 * BF16_BYTES;
    let logits = (max_seqs * c.vocab_size) as u64 * 4;
    2 * (tokens + logits) + RUNTIME_RESERVE_BYTES
}

/// Bytes left for the KV cache on one GPU: its memory times the utilization the engine may
/// take, less its weights and activation reserve. Negative when those do not fit.
pub fn kv_room_bytes(memory_bytes: u64, utilization: f64, weights: u64, reserve: u64) -> i64 {
    (memory_bytes as f64 * utilization).floor() as i64 - weights as i64 - reserve as i64
}

/// Tokens of context whose KV fits in `room` bytes at `per_token` bytes each (0 when the room
/// is negative).
pub fn max_kv_tokens(room: i64, per_token: u64) -> u64 {
    if room <= 0 || per_token == 0 {
        0
    } else {
        room as u64 / per_token
    }
}

/// bf16 bytes one token of context takes on one GPU of each stage of a `tp × pp` split.
pub fn stage_kv_bytes_per_token_per_gpu(c: &ModelConfig, tp: usize, pp: usize) -> Vec<u64> {
    (layers_per_stage(c.num_hidden_layers, pp).iter())
        .map(|&l| kv_bytes_per_token_per_gpu(c, tp, l))
        .collect()
}

// ANCHOR: kv_tokens_per_gpu
/// Tokens of context whose KV cache every GPU of a `tp × pp` split has room for: on each stage,
/// its GPU's memory × `utilization` less its weights and `reserve_bytes`, over its bytes per
/// token; the least over the stages, since a sequence's tokens live on every stage (0 when a
/// stage's weights and reserve do not fit). Needs `1 <= pp <= layers`.
pub fn kv_tokens_per_gpu(
    c: &ModelConfig,
    tp: usize,
    pp: usize,
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
) -> u64 {
    let weights = stage_weight_bytes_per_gpu(c, tp, pp);
    let kv = stage_kv_bytes_per_token_per_gpu(c, tp, pp);
    (weights.iter().zip(&kv))
        .map(|(&w, &per_token)| {
            let room = kv_room_bytes(memory_bytes, utilization, w, reserve_bytes);
            max_kv_tokens(room, per_token)
        })
        .min()
        .expect("at least one stage")
}
// ANCHOR_END: kv_tokens_per_gpu

// ANCHOR: fits
/// Whether a `tp × pp` split runs: TP splits the layers ([`tp_split_error`]), every stage has a
/// layer (`1 <= pp <= layers`), and every GPU has room for at least one sequence of
/// `context_tokens` (at least 1) besides its weights and `reserve_bytes`
/// ([`kv_tokens_per_gpu`]). The planner's candidates run exactly when this holds.
pub fn fits(
    c: &ModelConfig,
    (tp, pp): (usize, usize),
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
    context_tokens: usize,
) -> bool {
    tp_split_error(c, tp).is_none()
        && (1..=c.num_hidden_layers).contains(&pp)
        && kv_tokens_per_gpu(c, tp, pp, memory_bytes, utilization, reserve_bytes)
            >= context_tokens.max(1) as u64
}
// ANCHOR_END: fits

#[cfg(test)]
mod tests;
