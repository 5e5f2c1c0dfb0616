//! Exercise 2: each rank's slice of the weights (Megatron-LM's column- and row-parallel
//! layers, vLLM's `ColumnParallelLinear`, `RowParallelLinear` and `VocabParallelEmbedding`).
//!
//! A linear layer `y = x·Wᵀ` with `W` of shape `[out, in]` (Hugging Face's layout: one row per
//! output feature) splits over `tp` ranks in two ways:
//!
//! - **column-parallel**: rank `r` keeps a block of `W`'s *rows* (output features) and
//!   computes that block of `y`'s columns from the whole `x`. q/k/v (by whole heads) and
//!   gate/up are split so.
//! - **row-parallel**: rank `r` keeps a block of `W`'s *columns* (input features), multiplies
//!   the matching block of `x`'s columns, and gets a partial sum of the whole `y`; the ranks'
//!   partial sums are added by an all-reduce (exercise 1's). o_proj and down_proj are split
//!   so: their input is exactly the block the column-parallel layer before them produced.
//!
//! When there are fewer KV heads than ranks, each rank keeps a *copy* of the one KV head its
//! query heads read. The embedding table and the LM head split by vocabulary rows, padded with
//! zero rows to a multiple of `tp`; the RMSNorm weights are not split. The chapter's "Sharding
//! the weights" section has the table of every tensor and the contract.
//!
//! The engine calls your function for every tensor a rank loads
//! (`EngineParts::shard_tensor`), and refuses a slice whose shape is not the one the rank's
//! model runs (`tensor_parallel::rank_config`).
//!
//! Test: `cargo test -p stage5 --test shard_tensor`.

#[cfg(not(feature = "reference"))]
use engine::{
    config::ModelConfig, model_executor::tensor_parallel::TpShard,
    model_executor::weights::HostTensor,
};

#[cfg(feature = "mutants")]
pub use crate::mutants::shard_tensor::shard_tensor;
#[cfg(all(feature = "reference", not(feature = "mutants")))]
pub use engine::model_executor::tensor_parallel::shard_tensor;

// HINT: the last dot-separated part before `.weight` or `.bias` names the tensor:
//   `model.layers.3.self_attn.q_proj.weight` → `q_proj`. Everything else is a norm.
// HINT: a HostTensor is row-major: row i is `data[i*cols .. (i+1)*cols]`. A bias is a
//   `[1, out]` tensor: its "rows" of the matrix are its columns.
// HINT: how many rows does one head own in q_proj? In k_proj? Which query heads does rank r
//   hold, and which KV head do they read (query head h reads KV head h / (heads / kv_heads))?
//   Check your answer with 2 KV heads over 4 ranks.
// HINT: `engine::model_executor::tensor_parallel::vocab_parallel` cuts the vocabulary tables
//   (with their zero padding); you may call it, or write it.

#[cfg(not(feature = "reference"))]
// ANCHOR: stub
/// Rank `shard.rank`'s slice (of `shard.size` ranks) of the whole tensor `t`, whose Hugging
/// Face name is `name` (e.g. `model.layers.0.mlp.down_proj.weight`), in a model of shape
/// `config`:
///
/// | tensor | shape `[rows, cols]` | rank `r` keeps |
/// |---|---|---|
/// | `q_proj` | `[heads·d, hidden]` | the rows of its `heads/tp` query heads |
/// | `k_proj`, `v_proj` | `[kv·d, hidden]` | the rows of the KV heads its query heads read |
/// | `o_proj` | `[hidden, heads·d]` | the columns of its query heads |
/// | `gate_proj`, `up_proj` | `[inter, hidden]` | rows `r·inter/tp ..` |
/// | `down_proj` | `[hidden, inter]` | columns `r·inter/tp ..` |
/// | `embed_tokens`, `lm_head` | `[vocab, hidden]` | vocabulary rows `r·⌈vocab/tp⌉ ..`, zero-padded |
/// | norms | `[1, hidden]` | all of it |
///
/// (`d` is `config.head_dim`; biases of q/k/v are `[1, out]` and split like their weight's
/// rows.)
pub fn shard_tensor(
    config: &ModelConfig,
    shard: TpShard,
    name: &str,
    t: &HostTensor, // [rows, cols], the whole tensor
) -> HostTensor {
    todo!(
        "stage5: shard_tensor in stages/stage5/src/shard_tensor.rs — rank {}'s slice of {name}: \
         column-parallel by heads or rows, row-parallel by columns, vocab rows, or whole",
        shard.rank
    )
}
// ANCHOR_END: stub
