//! Plausible wrong weight shards:
//!
//! - `shard_row_parallel_wrong_axis`: o_proj and down_proj cut by rows (output features), like
//!   the column-parallel layers, instead of by columns (input features).
//! - `shard_kv_heads_round_robin`: with fewer KV heads than ranks, rank r takes KV head
//!   r mod kv (heads dealt out in turn) instead of the head its query heads read, r·kv/tp.
//! - `shard_contiguous_rows`: q, k and v cut into `tp` equal blocks of rows, ignoring head
//!   boundaries: right when `tp` divides the KV heads, half a head per rank when it does not.

use engine::config::ModelConfig;
use engine::model_executor::tensor_parallel::{self as tp, TpShard};
use engine::model_executor::weights::HostTensor;

use super::active;

/// The tensor's short name: `q_proj` for `model.layers.0.self_attn.q_proj.weight`.
fn short(name: &str) -> &str {
    let tensor = name.rsplit_once('.').map_or(name, |(head, _)| head);
    tensor.rsplit('.').next().unwrap_or("")
}

pub fn shard_tensor(
    config: &ModelConfig,
    shard: TpShard,
    name: &str,
    t: &HostTensor, // [rows, cols], the whole tensor
) -> HostTensor {
    let (r, n) = (shard.rank, shard.size);
    let out_len = if t.rows == 1 { t.cols } else { t.rows };
    let inter = config.intermediate_size / n;
    let kv = config.num_key_value_heads;
    match short(name) {
        "o_proj" if active("shard_row_parallel_wrong_axis") => {
            let rows = config.num_attention_heads / n * config.head_dim;
            tp::column_parallel(t, r * rows..(r + 1) * rows)
        }
        "down_proj" if active("shard_row_parallel_wrong_axis") => {
            tp::column_parallel(t, r * inter..(r + 1) * inter)
        }
        "k_proj" | "v_proj" if active("shard_kv_heads_round_robin") && kv < n => {
            let d = config.head_dim;
            let head = r % kv;
            tp::column_parallel(t, head * d..(head + 1) * d)
        }
        "q_proj" | "k_proj" | "v_proj" if active("shard_contiguous_rows") => {
            tp::column_parallel(t, r * out_len / n..(r + 1) * out_len / n)
        }
        _ => tp::shard_tensor(config, shard, name, t),
    }
}
