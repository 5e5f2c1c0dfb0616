//! Exercise 2: what one GPU holds under TP × PP (the planner's memory model).
//!
//! Before a model is started on `tp × pp` GPUs, the planner (`lab plan`) works out, for every
//! split, what each GPU must hold and whether it fits:
//!
//! - **weights**: PP gives each stage a run of consecutive layers (`layers_per_stage`, vLLM's
//!   split); TP gives each rank of the stage its shard of every one of those layers (its query
//!   heads' columns of q, its KV heads' columns of k and v, its rows of o_proj, its slice of
//!   the MLP; both RMSNorm weights whole). The embedding lives on the first stage only, the
//!   final norm and the LM head on the last only, each table cut into `tp` vocabulary ranges
//!   (`vocab_rows_per_rank`). A tied LM head is the embedding matrix: one copy when one stage
//!   is both first and last, a copy of its own on the last stage otherwise.
//! - **KV cache**: K and V for each of the stage's layers and each KV head the rank holds.
//!   With fewer KV heads than TP ranks, each KV head is replicated on `tp / kv_heads` ranks:
//!   a rank never holds less than one.
//! - **room**: the GPU's memory × utilization, less its weights and a reserve for activations;
//!   what is left, over the bytes per token, is the context it can cache. Every stage must
//!   hold every sequence's tokens for its own layers, so the stage with the least room decides.
//!
//! Everything on the GPU is bf16 ([`BF16_BYTES`]). The contract, with Llama-2-70B worked by
//! hand, is in the book's Stage 7 chapter, "What one GPU holds".
//!
//! Test: `cargo test -p stage7 --test memory_model`.

#[cfg(not(feature = "reference"))]
use engine::config::ModelConfig;
// Given: the layer split (stage 6), the vocabulary split (stage 5), the TP divisibility rules,
// and the room arithmetic.
pub use engine::distributed::memory_model::{
    kv_room_bytes, layers_per_stage, max_kv_tokens, tp_split_error, vocab_rows_per_rank, BF16_BYTES,
};

#[cfg(feature = "mutants")]
pub use crate::mutants::memory_model::{
    fits, kv_bytes_per_token_per_gpu, kv_heads_per_rank, kv_tokens_per_gpu,
    stage_weight_bytes_per_gpu, weight_bytes_per_gpu,
};
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::distributed::memory_model::{
    fits, kv_bytes_per_token_per_gpu, kv_heads_per_rank, kv_tokens_per_gpu,
    stage_weight_bytes_per_gpu, weight_bytes_per_gpu,
};

// HINT: Llama-2-70B has 8 KV heads. How many does one rank hold at TP 4? At TP 8? At TP 16,
//   where 8 heads cannot be cut 16 ways?
// HINT: list one decoder layer's weight matrices with their shapes (hidden h, head_dim d,
//   MLP width i). For each, which dimension does TP cut, and what is left on one rank? Which
//   weights are not cut at all?
// HINT: `first` and `last` say where the stage sits. Which weights does only the first stage
//   need, which only the last? What changes when the LM head is tied and the two are
//   different stages?
// HINT: TP and PP divide different things. After PP, how many layers does a GPU hold? After
//   TP, how much of each layer?
// HINT: `kv_tokens_per_gpu` and `fits` can be written from the functions above and the given
//   ones; which stage runs out of room first?

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// KV heads one TP rank holds, of the model's `num_kv_heads`, at TP size `tp`.
pub fn kv_heads_per_rank(num_kv_heads: usize, tp: usize) -> usize {
    todo!(
        "stage7: kv_heads_per_rank in stages/stage7/src/memory_model.rs — the KV heads one \
         TP rank holds"
    )
}

/// bf16 bytes of weights on one GPU (one TP rank) of a stage holding `layers` layers; `first`
/// and `last` say whether the stage is the pipeline's first and last (both at PP 1).
#[cfg(not(feature = "reference"))]
pub fn weight_bytes_per_gpu(
    c: &ModelConfig,
    tp: usize,
    layers: usize,
    first: bool,
    last: bool,
) -> u64 {
    todo!(
        "stage7: weight_bytes_per_gpu in stages/stage7/src/memory_model.rs — one GPU's \
         weights: its TP shard of its stage's layers, and the tables its stage holds"
    )
}

/// bf16 bytes one token of context takes in the KV cache of one GPU (one TP rank) of a stage
/// holding `layers` layers.
#[cfg(not(feature = "reference"))]
pub fn kv_bytes_per_token_per_gpu(c: &ModelConfig, tp: usize, layers: usize) -> u64 {
    todo!(
        "stage7: kv_bytes_per_token_per_gpu in stages/stage7/src/memory_model.rs — one \
         token's K and V on one GPU"
    )
}

/// bf16 bytes of weights on one GPU of each stage of a `tp × pp` split, in stage order
/// (`1 <= pp <= layers`).
#[cfg(not(feature = "reference"))]
pub fn stage_weight_bytes_per_gpu(c: &ModelConfig, tp: usize, pp: usize) -> Vec<u64> {
    todo!(
        "stage7: stage_weight_bytes_per_gpu in stages/stage7/src/memory_model.rs — one GPU's \
         weights on each pipeline stage"
    )
}

/// Tokens of context whose KV cache every GPU of a `tp × pp` split has room for, with
/// `memory_bytes` per GPU of which the engine may use `utilization`, less its weights and
/// `reserve_bytes` for activations (0 when a GPU's weights and reserve do not fit).
#[cfg(not(feature = "reference"))]
pub fn kv_tokens_per_gpu(
    c: &ModelConfig,
    tp: usize,
    pp: usize,
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
) -> u64 {
    todo!(
        "stage7: kv_tokens_per_gpu in stages/stage7/src/memory_model.rs — the context every \
         GPU of the split can cache"
    )
}

/// Whether a `tp × pp` split runs: TP splits the model (`tp_split_error`), every stage has a
/// layer, and every GPU has room for one sequence of `context_tokens` (at least 1).
#[cfg(not(feature = "reference"))]
pub fn fits(
    c: &ModelConfig,
    (tp, pp): (usize, usize),
    memory_bytes: u64,
    utilization: f64,
    reserve_bytes: u64,
    context_tokens: usize,
) -> bool {
    todo!(
        "stage7: fits in stages/stage7/src/memory_model.rs — whether a TP × PP split runs on \
         GPUs of this size"
    )
}
// ANCHOR_END: stub
