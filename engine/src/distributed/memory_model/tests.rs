use super::*;
use crate::model_executor::weights::parameter_count;
use proptest::prelude::*;

fn config(name: &str) -> ModelConfig {
    let path = format!("{}/configs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    ModelConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A random Llama shape whose heads split over `tp`, with `kv` KV heads.
fn shape(
    heads: usize,
    kv: usize,
    d: usize,
    i: usize,
    layers: usize,
    vocab: usize,
    tied: bool,
) -> ModelConfig {
    ModelConfig::from_json(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "hidden_size": {h}, "head_dim": {d},
        "intermediate_size": {i}, "num_hidden_layers": {layers}, "num_attention_heads": {heads},
        "num_key_value_heads": {kv}, "vocab_size": {vocab}, "tie_word_embeddings": {tied}}}"#,
        h = heads * d
    ))
    .unwrap()
}

#[test]
fn unsplit_weights_are_the_published_parameter_counts() {
    // The counts transformers reports for these models.
    for (name, params) in [
        ("llama-2-70b", 68_976_648_192u64),
        ("llama-3-8b", 8_030_261_248),
        ("llama-3-70b", 70_553_706_496),
    ] {
        let c = config(name);
        assert_eq!(parameter_count(&c), params, "{name}");
        let w = weight_bytes_per_gpu(&c, 1, c.num_hidden_layers, true, true);
        assert_eq!(w, 2 * params, "{name}");
    }
}

#[test]
fn llama_2_70b_at_tp8_by_hand() {
    let c = config("llama-2-70b");
    // One rank of one layer: q 8 heads × 128, k and v one KV head × 128 each, o 1024 rows,
    // gate/up/down 28672 / 8 = 3584 wide, two norms of 8192.
    let layer = 8192 * (1024 + 2 * 128) + 1024 * 8192 + 3 * 8192 * 3584 + 2 * 8192;
    assert_eq!(layer_params_per_rank(&c, 8), layer);
    // 80 layers, embedding and LM head 32000 / 8 rows each, final norm.
    let all = 80 * layer + 2 * 4000 * 8192 + 8192;
    assert_eq!(weight_bytes_per_gpu(&c, 8, 80, true, true), 2 * all);
    // K and V, 80 layers, 1 of 8 KV heads, 128 wide, 2 bytes; TP=1 holds all 8 heads.
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 8, 80), 2 * 80 * 128 * 2);
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 1, 80), 327_680);
    // Past 8 ranks a KV head is replicated: the cache per GPU stops shrinking.
    assert_eq!(kv_heads_per_rank(8, 16), 1);
    assert_eq!(tp_split_error(&c, 16), None);
    assert!(tp_split_error(&c, 3).unwrap().contains("64 query heads"));
}

#[test]
fn smollm2_splits_by_three_not_two() {
    let c = config("smollm2-135m");
    assert_eq!(tp_split_error(&c, 3), None);
    assert!(tp_split_error(&c, 2).unwrap().contains("9 query heads"));
    let c = shape(4, 2, 8, 30, 2, 10, false);
    assert!(tp_split_error(&c, 4).unwrap().contains("intermediate"));
    let c = shape(6, 2, 8, 24, 2, 10, false);
    assert!(tp_split_error(&c, 3).unwrap().contains("KV heads"));
}

#[test]
fn vllm_layer_split_and_kv_room() {
    assert_eq!(layers_per_stage(80, 3), vec![27, 27, 26]);
    assert_eq!(layers_per_stage(32, 5), vec![6, 6, 7, 7, 6]);
    assert_eq!(layers_per_stage(7, 7), vec![1; 7]);
    // 10 GB at 0.9, less 5 GB and 1 GB: 3 GB, i.e. 3e9 / 1000 tokens.
    let room = kv_room_bytes(10_000_000_000, 0.9, 5_000_000_000, 1_000_000_000);
    assert_eq!(room, 3_000_000_000);
    assert_eq!(max_kv_tokens(room, 1000), 3_000_000);
    assert_eq!(max_kv_tokens(-5, 1000), 0);
}

#[test]
fn the_activation_reserve_grows_with_the_step_and_shrinks_with_tp() {
    let c = config("llama-2-70b");
    // tp = 8: 3 × 8192 + (1024 + 256) + 1024 + 3 × 3584 per token, 2 bytes, 2048 tokens;
    // 64 × 32000 f32 logits; doubled; plus the runtime allowance.
    let per_token = 3 * 8192 + 1280 + 1024 + 3 * 3584;
    let expect = 2 * (2048 * per_token * 2 + 64 * 32000 * 4) + RUNTIME_RESERVE_BYTES;
    assert_eq!(activation_reserve_bytes(&c, 8, 2048, 64), expect);
    assert!(activation_reserve_bytes(&c, 1, 2048, 64) > expect);
}

proptest! {
    /// Summed over every GPU, the shards are the model's parameters plus exactly what is
    /// stored more than once: norms on every TP rank, replicated KV heads, the padding of
    /// the last vocab shard, and a tied table's second copy when PP > 1.
    #[test]
    fn shards_add_up_to_the_model(
        kv in 1usize..5, group in 1usize..4, d in 1usize..5, mult in 1usize..4,
        layers in 1usize..10, vocab in 1usize..200, tied: bool, tp_pick in 0usize..8,
        pp_pick in 0usize..10,
    ) {
        let heads = kv * group;
        let d = 2 * d;
        let divisors: Vec<usize> = (1..=2 * heads).filter(|&t| {
            heads % t == 0 && (if kv >= t { kv % t == 0 } else { t % kv == 0 })
        }).collect();
        let tp = divisors[tp_pick % divisors.len()];
        let c = shape(heads, kv, d, 12 * mult * tp, layers, vocab, tied);
        prop_assert_eq!(tp_split_error(&c, tp), None);
        let pp = 1 + pp_pick % layers;
        let stages = layers_per_stage(layers, pp);
        prop_assert_eq!(stages.iter().sum::<usize>(), layers);
        let total: u64 = stages.iter().enumerate()
            .map(|(s, &l)| tp as u64 * weight_bytes_per_gpu(&c, tp, l, s == 0, s == pp - 1))
            .sum();
        let h = (heads * d) as u64;
        let (t, l) = (tp as u64, layers as u64);
        let norms = (t - 1) * (2 * h * l + h);
        let kv_copies = (t * kv_heads_per_rank(kv, tp) as u64 - kv as u64) * d as u64 * 2 * h * l;
        let tables = if tied && pp == 1 { 1 } else { 2 };
        let padding = tables * (t * vocab.div_ceil(tp) as u64 - vocab as u64) * h;
        let tied_copy = if tied && pp > 1 { vocab as u64 * h } else { 0 };
        let expect = parameter_count(&c) + norms + kv_copies + padding + tied_copy;
        prop_assert_eq!(total, 2 * expect);
        // KV per token: the stages' layers and the ranks' heads cover every head of
        // every layer, replicated heads counted once per copy.
        let kv_total: u64 = stages.iter().map(|&l| t * kv_bytes_per_token_per_gpu(&c, tp, l)).sum();
        prop_assert_eq!(kv_total, 2 * l * (t * kv_heads_per_rank(kv, tp) as u64) * d as u64 * 2);
    }
}
