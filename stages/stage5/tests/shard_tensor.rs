//! Exercise 2: `shard_tensor`, each rank's slice of the weights.
//!
//! - examples worked by hand on the tiny model's shape (4 heads, 2 KV heads of 16, hidden 64);
//! - on random shapes and rank counts (proptest): every shard has the shape the rank's model
//!   runs, the column-parallel shards stacked in rank order give back the whole matrix and so
//!   do the row-parallel shards side by side, and each of a rank's query heads finds, in its
//!   k/v shard, the very KV head it reads in the whole model;
//! - plugged into the engine: with your shards, the tensor-parallel engine (one thread per
//!   rank) gives the greedy tokens of one rank, at TP 2, 3 and 4.

mod common;

use common::proptest_config;
use engine::config::ModelConfig;
use engine::model_executor::tensor_parallel::{rank_config, TpShard};
use engine::model_executor::weights::HostTensor;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, EngineParts, LLMEngine, Prompt, RequestOutput, SamplingParams};
use proptest::prelude::*;
use stage5::shard_tensor::shard_tensor;

/// A `[rows, cols]` tensor whose element (i, j) is `i·1000 + j`: a slice shows where it came
/// from.
fn numbered(rows: usize, cols: usize) -> HostTensor {
    let data = (0..rows)
        .flat_map(|i| (0..cols).map(move |j| (i * 1000 + j) as f32))
        .collect();
    HostTensor { data, rows, cols }
}

fn rows_of(t: &HostTensor, rows: std::ops::Range<usize>) -> Vec<f32> {
    t.data[rows.start * t.cols..rows.end * t.cols].to_vec()
}

fn cols_of(t: &HostTensor, cols: std::ops::Range<usize>) -> Vec<f32> {
    t.data
        .chunks(t.cols)
        .flat_map(|row| row[cols.clone()].to_vec())
        .collect()
}

fn shard(rank: usize, size: usize) -> TpShard {
    TpShard { rank, size }
}

const LAYER: &str = "model.layers.1";

fn name(tensor: &str) -> String {
    format!("{LAYER}.{tensor}.weight")
}

#[test]
fn q_proj_splits_by_query_heads() {
    // 4 heads of 16 rows: at TP 2, rank 1 holds heads 2 and 3, rows 32..64.
    let c = tiny_config();
    let q = numbered(64, 64);
    let s = shard_tensor(&c, shard(1, 2), &name("self_attn.q_proj"), &q);
    assert_eq!((s.rows, s.cols), (32, 64));
    assert_eq!(s.data, rows_of(&q, 32..64));
}

#[test]
fn kv_heads_are_copied_when_ranks_outnumber_them() {
    // 2 KV heads over 4 ranks: rank r's query head r reads KV head r / 2.
    let c = tiny_config();
    let k = numbered(32, 64);
    for (rank, head) in [(0, 0), (1, 0), (2, 1), (3, 1)] {
        for t in ["self_attn.k_proj", "self_attn.v_proj"] {
            let s = shard_tensor(&c, shard(rank, 4), &name(t), &k);
            assert_eq!((s.rows, s.cols), (16, 64), "{t} rank {rank}");
            assert_eq!(
                s.data,
                rows_of(&k, head * 16..(head + 1) * 16),
                "{t}: rank {rank} must hold KV head {head}"
            );
        }
    }
}

#[test]
fn o_proj_and_down_proj_split_by_columns() {
    let c = tiny_config(); // hidden 64, intermediate 128
    let o = numbered(64, 64);
    let s = shard_tensor(&c, shard(1, 2), &name("self_attn.o_proj"), &o);
    assert_eq!((s.rows, s.cols), (64, 32), "o_proj keeps every row");
    assert_eq!(s.data, cols_of(&o, 32..64));
    let down = numbered(64, 128);
    let s = shard_tensor(&c, shard(3, 4), &name("mlp.down_proj"), &down);
    assert_eq!((s.rows, s.cols), (64, 32));
    assert_eq!(s.data, cols_of(&down, 96..128));
}

#[test]
fn gate_and_up_split_by_rows_and_norms_stay_whole() {
    let c = tiny_config();
    let gate = numbered(128, 64);
    for t in ["mlp.gate_proj", "mlp.up_proj"] {
        let s = shard_tensor(&c, shard(2, 4), &name(t), &gate);
        assert_eq!((s.rows, s.cols), (32, 64), "{t}");
        assert_eq!(s.data, rows_of(&gate, 64..96), "{t}");
    }
    let norm = numbered(1, 64);
    let s = shard_tensor(&c, shard(1, 2), &name("input_layernorm"), &norm);
    assert_eq!((s.rows, s.cols, &s.data), (1, 64, &norm.data));
}

#[test]
fn the_vocabulary_splits_by_rows_padded_with_zeros() {
    // 259 ids over 2 ranks: 130 rows each, rank 1's last row padding.
    let c = tiny_config();
    let table = numbered(259, 64);
    for t in ["model.embed_tokens.weight", "lm_head.weight"] {
        let s = shard_tensor(&c, shard(1, 2), t, &table);
        assert_eq!((s.rows, s.cols), (130, 64), "{t}");
        assert_eq!(&s.data[..129 * 64], &rows_of(&table, 130..259)[..], "{t}");
        assert!(s.data[129 * 64..].iter().all(|&x| x == 0.0), "{t} padding");
    }
}

#[test]
fn a_bias_splits_like_its_weights_rows() {
    let c = ModelConfig {
        attention_bias: true,
        ..tiny_config()
    };
    let bias = numbered(1, 64); // q_proj's bias: 64 output features
    let s = shard_tensor(
        &c,
        shard(1, 2),
        &format!("{LAYER}.self_attn.q_proj.bias"),
        &bias,
    );
    assert_eq!((s.rows, s.cols), (1, 32));
    assert_eq!(s.data, cols_of(&bias, 32..64));
}

/// A random Llama shape whose heads, KV heads and MLP split over `tp`, and `tp`.
fn split_shapes() -> impl Strategy<Value = (ModelConfig, usize)> {
    (1usize..=4, 1usize..=3, 1usize..=3, 1usize..=3)
        .prop_flat_map(|(tp, kv_mul, group, d)| {
            // kv: a multiple of tp, or a divisor of it.
            let kvs: Vec<usize> = (1..=tp)
                .filter(|k| tp % k == 0)
                .chain([tp * kv_mul])
                .collect();
            (prop::sample::select(kvs), Just((tp, group, d)))
        })
        .prop_map(|(kv, (tp, group, d))| {
            let heads = (kv * group).max(tp).div_ceil(kv * group) * kv * group; // tp | heads
            let heads = if heads % tp == 0 { heads } else { heads * tp };
            let c = ModelConfig {
                num_attention_heads: heads,
                num_key_value_heads: kv,
                head_dim: 2 * d,
                hidden_size: 6,
                intermediate_size: 2 * tp,
                ..tiny_config()
            };
            (c, tp)
        })
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn shards_have_the_ranks_shape_and_tile_the_whole((c, tp) in split_shapes()) {
        let local = rank_config(&c, tp);
        let (h, d) = (c.hidden_size, c.head_dim);
        let (q, kv, inter) = (c.num_attention_heads * d, c.num_key_value_heads * d, c.intermediate_size);
        let column = [("self_attn.q_proj", q, local.num_attention_heads * d),
                      ("mlp.gate_proj", inter, local.intermediate_size),
                      ("mlp.up_proj", inter, local.intermediate_size)];
        for (t, rows, local_rows) in column {
            let whole = numbered(rows, h);
            let mut stacked = Vec::new();
            for r in 0..tp {
                let s = shard_tensor(&c, shard(r, tp), &name(t), &whole);
                prop_assert_eq!((s.rows, s.cols), (local_rows, h), "{} rank {}", t, r);
                stacked.extend(s.data);
            }
            prop_assert_eq!(&stacked, &whole.data, "{} shards stacked", t);
        }
        let row = [("self_attn.o_proj", q, local.num_attention_heads * d),
                   ("mlp.down_proj", inter, local.intermediate_size)];
        for (t, cols, local_cols) in row {
            let whole = numbered(h, cols);
            let shards: Vec<HostTensor> = (0..tp)
                .map(|r| shard_tensor(&c, shard(r, tp), &name(t), &whole))
                .collect();
            for (r, s) in shards.iter().enumerate() {
                prop_assert_eq!((s.rows, s.cols), (h, local_cols), "{} rank {}", t, r);
            }
            // Side by side, row by row, they are the whole matrix.
            let joined: Vec<f32> = (0..h)
                .flat_map(|i| shards.iter().flat_map(move |s| s.data[i * s.cols..(i + 1) * s.cols].to_vec()))
                .collect();
            prop_assert_eq!(&joined, &whole.data, "{} shards side by side", t);
        }
        for t in ["self_attn.k_proj", "self_attn.v_proj"] {
            let whole = numbered(kv, h);
            for r in 0..tp {
                let s = shard_tensor(&c, shard(r, tp), &name(t), &whole);
                prop_assert_eq!((s.rows, s.cols), (local.num_key_value_heads * d, h), "{} rank {}", t, r);
            }
        }
    }

    /// Attention on a rank: its local query head j is the model's head r·H/tp + j, and reads
    /// its local KV head j / (local H / local KV). That must be the model's KV head the whole
    /// model's query head reads, (r·H/tp + j) / (H / KV).
    #[test]
    fn each_query_head_finds_its_own_kv_head((c, tp) in split_shapes()) {
        let local = rank_config(&c, tp);
        let d = c.head_dim;
        let whole = numbered(c.num_key_value_heads * d, c.hidden_size);
        let group = c.num_attention_heads / c.num_key_value_heads;
        let local_group = local.num_attention_heads / local.num_key_value_heads;
        for r in 0..tp {
            let s = shard_tensor(&c, shard(r, tp), &name("self_attn.k_proj"), &whole);
            for j in 0..local.num_attention_heads {
                let global = (r * local.num_attention_heads + j) / group;
                let mine = j / local_group;
                let cols = c.hidden_size;
                prop_assert_eq!(
                    &s.data[mine * d * cols..(mine + 1) * d * cols],
                    &rows_of(&whole, global * d..(global + 1) * d)[..],
                    "rank {} of {}, local query head {}: KV head {} expected", r, tp, j, global
                );
            }
        }
    }
}

/// A small random-weight Llama: `heads` heads of 16, `kv` KV heads, two layers.
fn model(heads: usize, kv: usize) -> LoadedModel {
    LoadedModel {
        name: format!("random-{heads}-heads-{kv}-kv"),
        config: ModelConfig {
            hidden_size: heads * 16,
            intermediate_size: heads * 24,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            vocab_size: 301,
            ..tiny_config()
        },
        weights: ModelWeights::Random { seed: 11 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    }
}

/// Greedy outputs, with logits, for four prompts in one batch, at `tp` ranks.
fn generate(model: LoadedModel, tp: usize, parts: EngineParts) -> Vec<RequestOutput> {
    let mut config = EngineConfig::default();
    config.cache.block_size = 4;
    config.cache.num_kv_blocks = Some(48);
    config.parallel.tensor_parallel_size = tp;
    let mut engine = LLMEngine::with_parts(model, config, parts).unwrap();
    let mut params = SamplingParams::greedy(8);
    params.ignore_eos = true;
    params.output_logits = true;
    for p in 0..4u32 {
        let prompt = (0..3 + 4 * p)
            .map(|i| (p * 37 + i * 11 + 5) % 259)
            .collect();
        engine
            .add_request(Prompt::TokenIds(prompt), params.clone())
            .unwrap();
    }
    let mut done = Vec::new();
    while engine.has_unfinished_requests() {
        done.extend(engine.step().unwrap());
    }
    done.sort_by_key(|o| o.request_id);
    done
}

/// The gap between the two largest logits.
fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x > a {
            (a, b) = (x, a);
        } else if x > b {
            b = x;
        }
    }
    a - b
}

/// The ranks add their partial sums in another order than one rank does, so logits may differ
/// in their last bits (the engine measured at most 7.6e-6 on such shapes): they must agree
/// within 1e-4, and the greedy tokens must agree wherever one rank's top-2 margin exceeds
/// 2e-4 (no rounding that small can swap them). At a closer call the runs may part, and that
/// request is compared no further; nearly every token must have been compared.
fn assert_same_greedy_tokens(want: &[RequestOutput], got: &[RequestOutput], tp: usize) {
    let (mut compared, mut total) = (0, 0);
    for (w, g) in want.iter().zip(got) {
        total += w.token_ids.len();
        for k in 0..w.token_ids.len() {
            let diff = (w.logits[k].iter().zip(&g.logits[k]))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                diff <= 1e-4,
                "TP {tp}: request {:?} token {k}: logits differ by {diff}",
                w.request_id
            );
            if margin(&w.logits[k]) <= 2e-4 {
                if w.token_ids[k] != g.token_ids[k] {
                    break;
                }
            } else {
                assert_eq!(
                    w.token_ids[k], g.token_ids[k],
                    "TP {tp}: request {:?} token {k}",
                    w.request_id
                );
            }
            compared += 1;
        }
    }
    assert!(
        compared * 10 >= total * 9,
        "TP {tp}: only {compared} of {total} tokens compared"
    );
}

#[test]
fn the_engine_with_your_shards_gives_the_tokens_of_one_rank_at_tp_2_and_3() {
    // 6 heads over 6 KV heads: TP 2 and 3 both split the heads (and the 301-id vocabulary
    // pads to 302 and 303 rows).
    let want = generate(model(6, 6), 1, EngineParts::default());
    for tp in [2, 3] {
        let got = generate(model(6, 6), tp, stage5::engine_parts());
        assert_same_greedy_tokens(&want, &got, tp);
    }
}

#[test]
fn the_engine_with_your_shards_copies_kv_heads_at_tp_4() {
    // 8 heads over 2 KV heads at TP 4: ranks 0-1 hold KV head 0, ranks 2-3 KV head 1.
    let want = generate(model(8, 2), 1, EngineParts::default());
    let got = generate(model(8, 2), 4, stage5::engine_parts());
    assert_same_greedy_tokens(&want, &got, 4);
}
