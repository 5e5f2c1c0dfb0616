//! Tensor parallelism's weight shards: which slice of each matrix a rank holds (vLLM's
//! `ColumnParallelLinear`, `RowParallelLinear`, `VocabParallelEmbedding` and `ParallelLMHead`,
//! here as functions over host tensors, applied while the weights load).
//!
//! A linear layer `y = x·Wᵀ` with `W` `[out, in]` splits two ways:
//! - **Column-parallel** (split `out`, the rows of `W`): each rank computes a slice of `y`'s
//!   columns, and needs the whole `x`. q/k/v (by heads) and gate/up are split so.
//! - **Row-parallel** (split `in`, the columns of `W`): each rank multiplies its slice of `x`'s
//!   columns and gets a partial sum of the whole `y`; an all-reduce adds the partial sums.
//!   o_proj and down_proj are split so, and take as input exactly the column slice the
//!   column-parallel layer before them produced: a block needs one all-reduce, at its end.
//!
//! Attention splits by heads: rank `r` of `tp` holds query heads `r·H/tp ..`, and the KV heads
//! they read: `r·KV/tp ..` when `tp` divides the KV heads; when there are fewer KV heads than
//! ranks (`tp` a multiple of them), each rank holds one, KV head `r·KV/tp`, and ranks that
//! share it hold copies (vLLM's replication). Norms are small and every rank holds them whole.
//!
//! The embedding table and the LM head split by vocabulary rows: rank `r` holds ids
//! `r·V' .. (r+1)·V'`, where `V'` is the vocabulary divided by `tp` and rounded up (the last
//! rank's rows past the vocabulary are zeros, as vLLM pads). A rank's embedding gives zeros for
//! ids it does not hold, so an all-reduce assembles the rows; its LM head gives its slice of
//! the logits, and an all-gather of the slices (trimmed to the vocabulary) gives every rank all
//! of them, so that every rank samples the same token.

use std::collections::HashMap;
use std::ops::Range;

use super::pipeline_parallel::PpStage;
use super::random_weights::random_tensor;
use super::safetensors_loader::with_tensor_reader;
use super::weights::{assemble, assemble_into, HostTensor, LlamaWeights};
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::model_source::ModelWeights;

/// One rank's place in a tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpShard {
    /// `0..size`.
    pub rank: usize,
    /// The tensor-parallel size.
    pub size: usize,
}

/// The divisors of `n`, written for a message: "1, 3 or 9".
fn divisors(n: usize) -> String {
    let d: Vec<String> = (1..=n)
        .filter(|k| n.is_multiple_of(*k))
        .map(|k| k.to_string())
        .collect();
    match d.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => d.join(""),
    }
}

// ANCHOR: check
/// Refuses a tensor-parallel size the model's shape cannot be split by: it must divide the
/// query heads and the intermediate size, and divide the KV heads or be a multiple of them.
/// `name` names the model in the message. The vocabulary needs nothing (it is padded).
pub fn check_tensor_parallel(config: &ModelConfig, name: &str, tp: usize) -> Result<()> {
    let (heads, kv, inter) = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.intermediate_size,
    );
    let refuse = |m: String| Err(EngineError::InvalidArgument(m));
    if tp == 0 {
        return refuse("--tensor-parallel-size must be at least 1".into());
    }
    if !heads.is_multiple_of(tp) {
        return refuse(format!(
            "{name} has {heads} attention heads; --tensor-parallel-size must divide them ({})",
            divisors(heads)
        ));
    }
    if !(kv.is_multiple_of(tp) || tp.is_multiple_of(kv)) {
        return refuse(format!(
            "{name} has {kv} key-value heads; --tensor-parallel-size must divide them ({}) or \
             be a multiple of them",
            divisors(kv)
        ));
    }
    if !inter.is_multiple_of(tp) {
        return refuse(format!(
            "{name} has an intermediate size of {inter}; --tensor-parallel-size must divide it"
        ));
    }
    Ok(())
}
// ANCHOR_END: check

/// The shape one rank runs: its heads, its KV heads and its slice of the MLP. `vocab_size`
/// stays the whole vocabulary: the logits are gathered back to it before sampling.
pub fn rank_config(config: &ModelConfig, tp: usize) -> ModelConfig {
    let mut c = config.clone();
    c.num_attention_heads /= tp;
    c.num_key_value_heads = (config.num_key_value_heads / tp).max(1);
    c.intermediate_size /= tp;
    c
}

/// The KV heads rank `shard.rank` holds: its own slice, or (more ranks than KV heads) the one
/// KV head its query heads read, `r·KV/tp`.
pub fn kv_heads(config: &ModelConfig, shard: TpShard) -> Range<usize> {
    let kv = config.num_key_value_heads;
    if kv.is_multiple_of(shard.size) {
        let n = kv / shard.size;
        shard.rank * n..(shard.rank + 1) * n
    } else {
        let head = shard.rank * kv / shard.size;
        head..head + 1
    }
}

/// Vocabulary rows per rank: the vocabulary divided by the ranks, rounded up.
pub fn vocab_rows_per_rank(vocab: usize, tp: usize) -> usize {
    vocab.div_ceil(tp)
}

/// `ColumnParallelLinear`: rows `rows` of `t` (output features; for a bias `[1, out]`, its
/// columns).
pub fn column_parallel(t: &HostTensor, rows: Range<usize>) -> HostTensor {
    if t.rows == 1 {
        return row_parallel(t, rows);
    }
    HostTensor {
        data: t.data[rows.start * t.cols..rows.end * t.cols].to_vec(),
        rows: rows.len(),
        cols: t.cols,
    }
}

/// `RowParallelLinear`: columns `cols` of `t` (input features), every row.
pub fn row_parallel(t: &HostTensor, cols: Range<usize>) -> HostTensor {
    let mut data = Vec::with_capacity(t.rows * cols.len());
    for row in t.data.chunks_exact(t.cols.max(1)) {
        data.extend_from_slice(&row[cols.clone()]);
    }
    HostTensor {
        data,
        rows: t.rows,
        cols: cols.len(),
    }
}

/// `VocabParallelEmbedding` / `ParallelLMHead`: rank `r`'s `rows_per_rank` vocabulary rows,
/// zeros past the end of the vocabulary.
pub fn vocab_parallel(t: &HostTensor, shard: TpShard) -> HostTensor {
    let n = vocab_rows_per_rank(t.rows, shard.size);
    let start = (shard.rank * n).min(t.rows);
    let end = ((shard.rank + 1) * n).min(t.rows);
    let mut data = t.data[start * t.cols..end * t.cols].to_vec();
    data.resize(n * t.cols, 0.0);
    HostTensor {
        data,
        rows: n,
        cols: t.cols,
    }
}

/// Cuts a rank's part out of one whole tensor, as [`shard_tensor`] does: what
/// [`load_stage_shard_with`] calls for every tensor a rank loads (stage 5 swaps in the
/// learner's, through `EngineParts::shard_tensor`).
pub type ShardTensorFn =
    fn(config: &ModelConfig, shard: TpShard, name: &str, t: &HostTensor) -> HostTensor;

// ANCHOR: shard_tensor
/// Rank `shard`'s part of the tensor `name` (a Hugging Face name, e.g.
/// `model.layers.3.self_attn.q_proj.weight`) of a model of shape `config`.
pub fn shard_tensor(
    config: &ModelConfig,
    shard: TpShard,
    name: &str,
    t: &HostTensor,
) -> HostTensor {
    let d = config.head_dim;
    let r = shard.rank;
    let q_rows = config.num_attention_heads / shard.size * d;
    let kv = kv_heads(config, shard);
    let kv_rows = kv.start * d..kv.end * d;
    let inter = config.intermediate_size / shard.size;
    let tensor = name.rsplit_once('.').map_or(name, |(head, _)| head); // drop .weight/.bias
    match tensor.rsplit('.').next().unwrap_or("") {
        "q_proj" => column_parallel(t, r * q_rows..(r + 1) * q_rows),
        "k_proj" | "v_proj" => column_parallel(t, kv_rows),
        "o_proj" => row_parallel(t, r * q_rows..(r + 1) * q_rows),
        "gate_proj" | "up_proj" => column_parallel(t, r * inter..(r + 1) * inter),
        "down_proj" => row_parallel(t, r * inter..(r + 1) * inter),
        "embed_tokens" | "lm_head" => vocab_parallel(t, shard),
        _ => HostTensor {
            data: t.data.clone(),
            rows: t.rows,
            cols: t.cols,
        }, // norms: replicated
    }
}
// ANCHOR_END: shard_tensor

/// Every tensor [`assemble`] asks for, by name, with its whole shape.
fn full_shapes(config: &ModelConfig) -> HashMap<String, [usize; 2]> {
    let mut shapes = HashMap::new();
    let _: std::result::Result<_, std::convert::Infallible> = assemble(config, |name, shape| {
        shapes.insert(name.to_string(), shape);
        Ok(HostTensor {
            data: Vec::new(),
            rows: 0,
            cols: 0,
        })
    });
    shapes
}

// ANCHOR: load_shard
/// Builds rank `shard`'s weights of a model of shape `config` from `weights`, tensor by tensor:
/// each whole tensor is read (or drawn, or cut from fused host weights), sliced with
/// [`shard_tensor`], fused for the rank's shape ([`rank_config`]) and handed to `up`. Every
/// rank reads the same files or seeds, so the ranks need not exchange weights.
pub fn load_shard_into<T>(
    weights: &ModelWeights,
    config: &ModelConfig,
    shard: TpShard,
    up: impl FnMut(HostTensor) -> Result<T>,
) -> Result<LlamaWeights<T>> {
    let whole = PpStage::whole(config.num_hidden_layers);
    load_stage_shard_into(weights, config, shard, &whole, up)
}
// ANCHOR_END: load_shard

/// [`load_shard_into`] for one pipeline stage: only the stage's layers (numbered from 0 in
/// the result) and the other tensors it holds ([`PpStage::holds`]) are read; the embedding
/// table, final norm or LM head of a stage that does not hold them are `[0, cols]` tensors.
pub fn load_stage_shard_into<T>(
    weights: &ModelWeights,
    config: &ModelConfig,
    shard: TpShard,
    stage: &PpStage,
    up: impl FnMut(HostTensor) -> Result<T>,
) -> Result<LlamaWeights<T>> {
    load_stage_shard_with(weights, config, shard, stage, shard_tensor, up)
}

/// [`load_stage_shard_into`] with `shard_fn` in place of [`shard_tensor`]. A shard whose shape
/// is not the rank's ([`rank_config`]) is an error naming the tensor, not a wrong model.
pub fn load_stage_shard_with<T>(
    weights: &ModelWeights,
    config: &ModelConfig,
    shard: TpShard,
    stage: &PpStage,
    shard_fn: ShardTensorFn,
    mut up: impl FnMut(HostTensor) -> Result<T>,
) -> Result<LlamaWeights<T>> {
    let mut local = rank_config(config, shard.size);
    local.num_hidden_layers = stage.layers.len();
    let shapes = full_shapes(config);
    let shape_of = |name: &str| {
        shapes.get(name).copied().ok_or_else(|| {
            EngineError::Internal(format!("tensor `{name}` has no shape in the full model"))
        })
    };
    // The stage's layer i is the model's layer `stage.layers.start + i`.
    let whole_name = |name: &str| match name.strip_prefix("model.layers.") {
        Some(rest) => {
            let (i, tensor) = rest.split_once('.').unwrap_or((rest, ""));
            let i = i.parse::<usize>().unwrap_or(usize::MAX);
            format!("model.layers.{}.{tensor}", stage.layers.start + i)
        }
        None => name.to_string(),
    };
    let tied = config.tie_word_embeddings;
    let mut sharded = |read: &mut dyn FnMut(&str, [usize; 2]) -> Result<HostTensor>| {
        assemble_into(
            &local,
            |name, local_shape| {
                let name = whole_name(name);
                let [_, cols] = shape_of(&name)?;
                if !stage.holds(&name, tied) {
                    let data = Vec::new();
                    return Ok(HostTensor {
                        data,
                        rows: 0,
                        cols,
                    });
                }
                let whole = read(&name, shape_of(&name)?)?;
                let part = shard_fn(config, shard, &name, &whole);
                check_shard_shape(config, shard, &name, local_shape, &part)?;
                Ok(part)
            },
            &mut up,
        )
    };
    match weights {
        ModelWeights::Random { seed } => {
            sharded(&mut |name, [rows, cols]| Ok(random_tensor(*seed, name, rows, cols)))
        }
        ModelWeights::Safetensors(dir) | ModelWeights::Gguf { dir, .. } => {
            with_tensor_reader(dir, |read| sharded(read))
        }
        ModelWeights::Host(w) => sharded(&mut |name, _| unfused(config, w, name)),
    }
}

/// Refuses a shard whose shape is not the one the rank's model runs (`local`, from
/// [`rank_config`]; the vocabulary tables hold [`vocab_rows_per_rank`] rows), so that a wrong
/// [`ShardTensorFn`] is a clear error rather than a model that computes nonsense.
fn check_shard_shape(
    config: &ModelConfig,
    shard: TpShard,
    name: &str,
    [rows, cols]: [usize; 2],
    part: &HostTensor,
) -> Result<()> {
    let vocab = name == "model.embed_tokens.weight" || name == "lm_head.weight";
    let rows = match vocab {
        true => vocab_rows_per_rank(config.vocab_size, shard.size),
        false => rows,
    };
    if (part.rows, part.cols) == (rows, cols) && part.data.len() == rows * cols {
        return Ok(());
    }
    Err(EngineError::InvalidArgument(format!(
        "the shard of `{name}` for tensor-parallel rank {} of {} is [{}, {}] ({} values), but \
         that rank's model needs [{rows}, {cols}]",
        shard.rank,
        shard.size,
        part.rows,
        part.cols,
        part.data.len()
    )))
}

/// The Hugging Face tensor `name`, cut back out of fused host weights (q, k, v from `qkv_proj`;
/// gate and up from `gate_up_proj`).
fn unfused(c: &ModelConfig, w: &LlamaWeights<HostTensor>, name: &str) -> Result<HostTensor> {
    let missing = || EngineError::Internal(format!("no host tensor for `{name}`"));
    let copy = |t: &HostTensor| HostTensor {
        data: t.data.clone(),
        rows: t.rows,
        cols: t.cols,
    };
    match name {
        "model.embed_tokens.weight" => return Ok(copy(&w.embed_tokens)),
        "model.norm.weight" => return Ok(copy(&w.norm)),
        "lm_head.weight" => return w.lm_head.as_ref().map(copy).ok_or_else(missing),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.").ok_or_else(missing)?;
    let (i, tensor) = rest.split_once('.').ok_or_else(missing)?;
    let layer = i
        .parse::<usize>()
        .ok()
        .and_then(|i| w.layers.get(i))
        .ok_or_else(missing)?;
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let inter = c.intermediate_size;
    let bias = || layer.qkv_bias.as_ref().ok_or_else(missing);
    Ok(match tensor {
        "input_layernorm.weight" => copy(&layer.input_layernorm),
        "post_attention_layernorm.weight" => copy(&layer.post_attention_layernorm),
        "self_attn.q_proj.weight" => column_parallel(&layer.qkv_proj, 0..q),
        "self_attn.k_proj.weight" => column_parallel(&layer.qkv_proj, q..q + kv),
        "self_attn.v_proj.weight" => column_parallel(&layer.qkv_proj, q + kv..q + 2 * kv),
        "self_attn.q_proj.bias" => column_parallel(bias()?, 0..q),
        "self_attn.k_proj.bias" => column_parallel(bias()?, q..q + kv),
        "self_attn.v_proj.bias" => column_parallel(bias()?, q + kv..q + 2 * kv),
        "self_attn.o_proj.weight" => copy(&layer.o_proj),
        "mlp.gate_proj.weight" => column_parallel(&layer.gate_up_proj, 0..inter),
        "mlp.up_proj.weight" => column_parallel(&layer.gate_up_proj, inter..2 * inter),
        "mlp.down_proj.weight" => copy(&layer.down_proj),
        _ => return Err(missing()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_executor::random_weights::random_weights;
    use crate::tiny_model::tiny_config;

    #[test]
    fn divisors_read_as_a_list() {
        assert_eq!(divisors(9), "1, 3 or 9");
        assert_eq!(divisors(1), "1");
        assert_eq!(divisors(2), "1 or 2");
    }

    #[test]
    fn kv_heads_split_or_replicate_as_vllm() {
        let mut c = tiny_config(); // 4 heads, 2 KV heads
        let ranges = |c: &ModelConfig, size| -> Vec<Range<usize>> {
            (0..size)
                .map(|rank| kv_heads(c, TpShard { rank, size }))
                .collect()
        };
        assert_eq!(ranges(&c, 2), [0..1, 1..2]);
        assert_eq!(ranges(&c, 4), [0..1, 0..1, 1..2, 1..2]);
        c.num_key_value_heads = 4;
        assert_eq!(ranges(&c, 2), [0..2, 2..4]);
    }

    /// Shards of fused host weights equal shards of the same weights drawn by name.
    #[test]
    fn host_weights_shard_like_drawn_ones() {
        let c = tiny_config();
        let host = ModelWeights::Host(random_weights(&c, 7));
        let drawn = ModelWeights::Random { seed: 7 };
        for size in [1, 2, 4] {
            for rank in 0..size {
                let shard = TpShard { rank, size };
                let a = load_shard_into(&host, &c, shard, Ok).unwrap();
                let b = load_shard_into(&drawn, &c, shard, Ok).unwrap();
                let flat = |w: LlamaWeights<HostTensor>| {
                    let mut all = Vec::new();
                    let _ = w.try_map(|t| {
                        all.push((t.rows, t.cols, t.data));
                        Ok::<_, ()>(())
                    });
                    all
                };
                assert_eq!(flat(a), flat(b), "rank {rank} of {size}");
            }
        }
    }

    /// A shard function that cuts o_proj by rows (the wrong axis) is refused at load, naming
    /// the tensor and both shapes; the engine's own loads.
    #[test]
    fn a_shard_of_the_wrong_shape_is_an_error_naming_the_tensor() {
        fn rows_for_o_proj(c: &ModelConfig, s: TpShard, name: &str, t: &HostTensor) -> HostTensor {
            match name.contains("o_proj") {
                true => {
                    column_parallel(t, s.rank * t.rows / s.size..(s.rank + 1) * t.rows / s.size)
                }
                false => shard_tensor(c, s, name, t),
            }
        }
        let c = tiny_config();
        let w = ModelWeights::Random { seed: 1 };
        let stage = PpStage::whole(c.num_hidden_layers);
        let shard = TpShard { rank: 1, size: 2 };
        assert!(load_stage_shard_with(&w, &c, shard, &stage, shard_tensor, Ok).is_ok());
        let err = load_stage_shard_with(&w, &c, shard, &stage, rows_for_o_proj, Ok)
            .err()
            .expect("a wrong shard must be refused")
            .to_string();
        assert!(
            err.contains(
                "the shard of `model.layers.0.self_attn.o_proj.weight` for tensor-parallel rank 1 \
                 of 2 is [32, 64] (2048 values), but that rank's model needs [64, 32]"
            ),
            "{err}"
        );
    }

    #[test]
    fn vocab_shards_pad_with_zeros_and_cover_the_table() {
        let t = HostTensor {
            data: (0..10).map(|v| v as f32).collect(),
            rows: 5,
            cols: 2,
        };
        let shards: Vec<HostTensor> = (0..3)
            .map(|rank| vocab_parallel(&t, TpShard { rank, size: 3 }))
            .collect();
        assert!(shards.iter().all(|s| s.rows == 2));
        let joined: Vec<f32> = shards.iter().flat_map(|s| s.data.clone()).collect();
        assert_eq!(&joined[..10], &t.data[..]);
        assert_eq!(&joined[10..], &[0.0, 0.0]);
    }
}
