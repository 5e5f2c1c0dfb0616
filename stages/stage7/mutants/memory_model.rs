//! Plausible wrong memory models:
//!
//! - `memory_tables_on_every_stage`: forgets where the tables live: the embedding and the LM
//!   head on every stage, not the embedding on the first and the LM head on the last.
//! - `memory_tied_head_once`: a tied LM head counted once for the whole pipeline, so the last
//!   stage of a PP > 1 split gets no copy of the table it multiplies by.
//! - `memory_kv_heads_divided_by_tp`: KV heads per rank = KV heads / TP, even when TP is
//!   larger (0 heads: no k/v weights and no KV cache at all), instead of replicating them.
//! - `memory_layers_divided_by_tp`: TP taken for a second PP: each GPU holds a stage's
//!   layers / TP whole layers (the source's "split 4 ways … each stage has 16 layers"), which
//!   comes close for the matrices but not for what TP replicates (the norms, the KV heads
//!   past their count).
//!
//! With none of these selected, every function is the engine's.

use engine::config::ModelConfig;
use engine::distributed::memory_model as engine_mm;
use engine::distributed::memory_model::{
    kv_room_bytes, layers_per_stage, max_kv_tokens, tp_split_error, vocab_rows_per_rank, BF16_BYTES,
};

use super::active;

/// This file's mutants.
const MUTANTS: [&str; 4] = [
    "memory_tables_on_every_stage",
    "memory_tied_head_once",
    "memory_kv_heads_divided_by_tp",
    "memory_layers_divided_by_tp",
];

/// Whether one of this file's mutants is selected.
fn mutated() -> bool {
    MUTANTS.iter().any(|&m| active(m))
}

pub fn kv_heads_per_rank(num_kv_heads: usize, tp: usize) -> usize {
    if active("memory_kv_heads_divided_by_tp") {
        num_kv_heads / tp
    } else {
        engine_mm::kv_heads_per_rank(num_kv_heads, tp)
    }
}

/// The engine's per-rank layer count, with this file's KV heads.
fn layer_params_per_rank(c: &ModelConfig, tp: usize) -> u64 {
    let (h, d) = (c.hidden_size as u64, c.head_dim as u64);
    let q = (c.num_attention_heads / tp) as u64 * d;
    let kv = kv_heads_per_rank(c.num_key_value_heads, tp) as u64 * d;
    let i = (c.intermediate_size / tp) as u64;
    let bias = if c.attention_bias { q + 2 * kv } else { 0 };
    h * (q + 2 * kv) + bias + q * h + 3 * h * i + 2 * h
}

pub fn weight_bytes_per_gpu(
    c: &ModelConfig,
    tp: usize,
    layers: usize,
    first: bool,
    last: bool,
) -> u64 {
    if !mutated() {
        return engine_mm::weight_bytes_per_gpu(c, tp, layers, first, last);
    }
    let (layers, layer_tp) = if active("memory_layers_divided_by_tp") {
        (layers.div_ceil(tp), 1)
    } else {
        (layers, tp)
    };
    let (first, last) = if active("memory_tables_on_every_stage") {
        (true, true)
    } else {
        (first, last)
    };
    let table = (vocab_rows_per_rank(c.vocab_size, tp) * c.hidden_size) as u64;
    let mut params = layers as u64 * layer_params_per_rank(c, layer_tp);
    if first {
        params += table;
    }
    if last {
        params += c.hidden_size as u64;
        let own_head = if active("memory_tied_head_once") {
            !c.tie_word_embeddings
        } else {
            !(first && c.tie_word_embeddings)
        };
        if own_head {
            params += table;
        }
    }
    params * BF16_BYTES
}

pub fn kv_bytes_per_token_per_gpu(c: &ModelConfig, tp: usize, layers: usize) -> u64 {
    if !mutated() {
        return engine_mm::kv_bytes_per_token_per_gpu(c, tp, layers);
    }
    let (layers, heads) = if active("memory_layers_divided_by_tp") {
        (layers.div_ceil(tp), c.num_key_value_heads)
    } else {
        (layers, kv_heads_per_rank(c.num_key_value_heads, tp))
    };
    2 * layers as u64 * heads as u64 * c.head_dim as u64 * BF16_BYTES
}

pub fn stage_weight_bytes_per_gpu(c: &ModelConfig, tp: usize, pp: usize) -> Vec<u64> {
    if !mutated() {
        return engine_mm::stage_weight_bytes_per_gpu(c, tp, pp);
    }
    (layers_per_stage(c.num_hidden_layers, pp).iter().enumerate())
        .map(|(s, &l)| weight_bytes_per_gpu(c, tp, l, s == 0, s == pp - 1))
        .collect()
}

pub fn kv_tokens_per_gpu(
    c: &ModelConfig,
    tp: usize,
    pp: usize,
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
) -> u64 {
    if !mutated() {
        return engine_mm::kv_tokens_per_gpu(c, tp, pp, memory_bytes, utilization, reserve_bytes);
    }
    (layers_per_stage(c.num_hidden_layers, pp).iter().enumerate())
        .map(|(s, &l)| {
            let w = weight_bytes_per_gpu(c, tp, l, s == 0, s == pp - 1);
            let room = kv_room_bytes(memory_bytes, utilization, w, reserve_bytes);
            max_kv_tokens(room, kv_bytes_per_token_per_gpu(c, tp, l))
        })
        .min()
        .expect("at least one stage")
}

pub fn fits(
    c: &ModelConfig,
    (tp, pp): (usize, usize),
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
    context_tokens: usize,
) -> bool {
    if !mutated() {
        let split = (tp, pp);
        return engine_mm::fits(
            c,
            split,
            memory_bytes,
            utilization,
            reserve_bytes,
            context_tokens,
        );
    }
    tp_split_error(c, tp).is_none()
        && (1..=c.num_hidden_layers).contains(&pp)
        && kv_tokens_per_gpu(c, tp, pp, memory_bytes, utilization, reserve_bytes)
            >= context_tokens.max(1) as u64
}
