//! Exercise 2: your memory model, by hand on Llama-2-70B and SmolLM2, against the engine's
//! planner, and against the engine on random model shapes and splits.

mod common;

use common::{config, shape};
use engine::config::ModelConfig;
use engine::distributed::comm_model::Interconnect;
use engine::distributed::memory_model as engine_mm;
use engine::distributed::planner::{candidates, evaluate, Hardware, Workload};
use engine::model_executor::weights::parameter_count;
use proptest::prelude::*;
use stage7::memory_model::{
    fits, kv_bytes_per_token_per_gpu, kv_heads_per_rank, kv_tokens_per_gpu, layers_per_stage,
    stage_weight_bytes_per_gpu, weight_bytes_per_gpu,
};

#[test]
fn kv_heads_per_rank_by_hand() {
    // Llama-2-70B's 8 KV heads: cut 1, 2, 4, 8 ways, then replicated.
    assert_eq!(kv_heads_per_rank(8, 1), 8);
    assert_eq!(kv_heads_per_rank(8, 4), 2);
    assert_eq!(kv_heads_per_rank(8, 8), 1);
    assert_eq!(
        kv_heads_per_rank(8, 16),
        1,
        "16 ranks, 8 KV heads: each held by two ranks"
    );
    // SmolLM2's 3 KV heads at TP 3, and 2 KV heads over 4 ranks.
    assert_eq!(kv_heads_per_rank(3, 3), 1);
    assert_eq!(kv_heads_per_rank(2, 4), 1);
}

/// Llama-2-70B (80 layers, hidden 8192, 64 heads and 8 KV heads of 128, MLP 28672, vocabulary
/// 32000, untied) at TP 8 and at TP 4 × PP 2, counted by hand.
#[test]
fn llama_2_70b_by_hand() {
    let c = config("llama-2-70b");
    // One layer on one of 8 ranks: q 8 heads × 128 = 1024 columns, k and v one KV head each,
    // o_proj 1024 rows, gate/up/down 28672 / 8 = 3584 wide, two norms of 8192 whole.
    let layer8 = 8192 * (1024 + 2 * 128) + 1024 * 8192 + 3 * 8192 * 3584 + 2 * 8192;
    assert_eq!(layer8, 106_971_136);
    // TP 8, PP 1: all 80 layers, an eighth of the embedding and of the LM head, the final norm.
    let tp8 = 2 * (80 * layer8 + 2 * 4000 * 8192 + 8192);
    assert_eq!(weight_bytes_per_gpu(&c, 8, 80, true, true), tp8);
    assert_eq!(stage_weight_bytes_per_gpu(&c, 8, 1), [tp8]);
    // TP 4 × PP 2: 40 layers a stage, a quarter of each; the embedding's quarter on stage 0,
    // the LM head's quarter and the final norm on stage 1.
    let layer4 = 8192 * (2048 + 2 * 256) + 2048 * 8192 + 3 * 8192 * 7168 + 2 * 8192;
    assert_eq!(layer4, 213_925_888);
    let first = 2 * (40 * layer4 + 8000 * 8192);
    let last = 2 * (40 * layer4 + 8000 * 8192 + 8192);
    assert_eq!(weight_bytes_per_gpu(&c, 4, 40, true, false), first);
    assert_eq!(weight_bytes_per_gpu(&c, 4, 40, false, true), last);
    assert_eq!(stage_weight_bytes_per_gpu(&c, 4, 2), [first, last]);
    // 17.25 GB either way; TP 8 holds 40 more layers' worth of replicated norms.
    assert_eq!(tp8 - last, 40 * 2 * 8192 * 2);
    // A middle stage of TP 4 × PP 4 (20 layers) holds no table at all.
    assert_eq!(stage_weight_bytes_per_gpu(&c, 4, 4)[1], 2 * 20 * layer4);
    // The whole model on one GPU: 68,976,648,192 parameters.
    assert_eq!(
        weight_bytes_per_gpu(&c, 1, 80, true, true),
        2 * 68_976_648_192
    );

    // KV per token: K and V × layers × KV heads on the rank × 128 × 2 bytes.
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 1, 80), 327_680);
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 8, 80), 40_960);
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 4, 40), 40_960);
    // TP 16 replicates each KV head on two ranks: no smaller than at TP 8.
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 16, 80), 40_960);
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 16, 40), 20_480);
}

/// SmolLM2-135M ties its LM head to the embedding (30 layers, hidden 576, vocabulary 49152,
/// 9 heads and 3 KV heads of 64, MLP 1536). At PP 1 the one table serves both ends; at PP 2
/// the last stage needs its own copy.
#[test]
fn a_tied_head_is_copied_to_the_last_stage() {
    let c = config("smollm2-135m");
    assert!(c.tie_word_embeddings);
    // TP 3: 3 heads and 1 KV head of 64 per rank, 512 of the MLP, norms whole.
    let layer = 576 * (192 + 2 * 64) + 192 * 576 + 3 * 576 * 512 + 2 * 576;
    let table = 16_384 * 576; // 49152 / 3 rows
    assert_eq!(
        weight_bytes_per_gpu(&c, 3, 30, true, true),
        2 * (30 * layer + table + 576)
    );
    assert_eq!(
        stage_weight_bytes_per_gpu(&c, 3, 2),
        [2 * (15 * layer + table), 2 * (15 * layer + table + 576)]
    );
    // KV per token at TP 3: 1 of the 3 KV heads, 30 layers, K and V of 64, 2 bytes.
    assert_eq!(kv_bytes_per_token_per_gpu(&c, 3, 30), 2 * 30 * 64 * 2);
}

fn h200s(gpus: usize, gb: f64) -> Hardware {
    Hardware::new(gpus, gb, Interconnect::NvLink)
}

/// Every split `lab plan` weighs for Llama-2-70B on 8 GPUs of 141, 40 and 24 GB: your weights,
/// KV per token, context and verdict are the planner's.
#[test]
fn seventy_b_on_eight_gpus_as_the_planner_sees_it() {
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let (mut runs, mut refused) = (0, 0);
    for gb in [141.0, 40.0, 24.0] {
        let hw = h200s(8, gb);
        for cand in candidates(&c, &hw, &w) {
            let (tp, pp) = (cand.tp, cand.pp);
            let what = format!("TP {tp} × PP {pp} on {gb} GB GPUs");
            let stages = stage_weight_bytes_per_gpu(&c, tp, pp);
            assert_eq!(stages.len(), pp, "{what}");
            assert_eq!(
                stages.iter().max(),
                Some(&cand.weight_bytes_per_gpu),
                "{what}"
            );
            let kv = layers_per_stage(80, pp)
                .iter()
                .map(|&l| kv_bytes_per_token_per_gpu(&c, tp, l))
                .max();
            assert_eq!(kv, Some(cand.kv_bytes_per_token_per_gpu), "{what}");
            let reserve = cand.activation_reserve_bytes;
            let (mem, util) = (hw.gpu_memory_bytes, w.utilization);
            assert_eq!(
                kv_tokens_per_gpu(&c, tp, pp, mem, util, reserve),
                cand.max_kv_tokens,
                "{what}"
            );
            let ok = fits(&c, (tp, pp), mem, util, reserve, w.context_tokens);
            assert_eq!(ok, cand.problem.is_none(), "{what}: {:?}", cand.problem);
            if ok {
                runs += 1;
            } else {
                refused += 1;
            }
        }
    }
    assert!(runs > 0 && refused > 0, "{runs} run, {refused} refused");
}

/// Splits that cannot run are refused whatever the memory: TP that does not divide the heads,
/// more stages than layers.
#[test]
fn splits_the_model_does_not_allow_do_not_fit() {
    let c = config("llama-2-70b");
    let plenty = 1 << 50;
    assert!(fits(&c, (8, 1), plenty, 0.9, 0, 4096));
    assert!(
        !fits(&c, (3, 1), plenty, 0.9, 0, 4096),
        "64 heads over 3 ranks"
    );
    assert!(
        !fits(&c, (1, 81), plenty, 0.9, 0, 4096),
        "81 stages of 80 layers"
    );
    assert!(fits(&c, (1, 80), plenty, 0.9, 0, 4096));
}

/// A random Llama shape whose heads split over the chosen TP, as `(config, tp)`.
fn shape_and_tp() -> impl Strategy<Value = (ModelConfig, usize)> {
    (
        1usize..5,
        1usize..4,
        1usize..5,
        1usize..4,
        1usize..12,
        1usize..300,
        any::<bool>(),
        0usize..8,
    )
        .prop_map(|(kv, group, d, mult, layers, vocab, tied, pick)| {
            let heads = kv * group;
            // Every TP the heads allow, KV heads replicated past their count included.
            let tps: Vec<usize> = (1..=2 * heads)
                .filter(|&t| heads % t == 0 && if kv >= t { kv % t == 0 } else { t % kv == 0 })
                .collect();
            let tp = tps[pick % tps.len()];
            let c = shape((heads, kv, 2 * d), 12 * mult * tp, layers, vocab, tied);
            (c, tp)
        })
}

proptest! {
    #![proptest_config(common::proptest_config(256))]

    /// Each function equals the engine's, on random shapes, splits and stage positions.
    #[test]
    fn matches_the_engine(
        (c, tp) in shape_and_tp(), pp_pick in 0usize..12, first: bool, last: bool,
        layers in 0usize..12,
    ) {
        prop_assert_eq!(engine_mm::tp_split_error(&c, tp), None);
        let pp = 1 + pp_pick % c.num_hidden_layers;
        prop_assert_eq!(
            kv_heads_per_rank(c.num_key_value_heads, tp),
            engine_mm::kv_heads_per_rank(c.num_key_value_heads, tp)
        );
        prop_assert_eq!(
            weight_bytes_per_gpu(&c, tp, layers, first, last),
            engine_mm::weight_bytes_per_gpu(&c, tp, layers, first, last),
            "tp {} layers {} first {} last {} tied {}", tp, layers, first, last, c.tie_word_embeddings
        );
        prop_assert_eq!(
            kv_bytes_per_token_per_gpu(&c, tp, layers),
            engine_mm::kv_bytes_per_token_per_gpu(&c, tp, layers)
        );
        prop_assert_eq!(
            stage_weight_bytes_per_gpu(&c, tp, pp),
            engine_mm::stage_weight_bytes_per_gpu(&c, tp, pp),
            "tp {} pp {}", tp, pp
        );
    }

    /// Summed over all `tp × pp` GPUs, the weights are the model's parameters (counted by the
    /// engine's loader, not by the memory model) plus exactly what is stored more than once:
    /// the norms on every TP rank, the replicated KV heads, the padding of the last vocabulary
    /// shard, and a tied table's second copy when PP > 1. The KV cache covers every KV head of
    /// every layer, a replicated head once per copy.
    #[test]
    fn the_shards_add_up_to_the_model((c, tp) in shape_and_tp(), pp_pick in 0usize..12) {
        let pp = 1 + pp_pick % c.num_hidden_layers;
        let total: u64 = stage_weight_bytes_per_gpu(&c, tp, pp).iter().map(|w| tp as u64 * w).sum();
        let (h, l, t) = (c.hidden_size as u64, c.num_hidden_layers as u64, tp as u64);
        let (kv, d, vocab) = (c.num_key_value_heads as u64, c.head_dim as u64, c.vocab_size as u64);
        let kv_held = t * (kv / t).max(1); // KV heads over all ranks of a stage, copies counted
        let norms = (t - 1) * (2 * h * l + h);
        let kv_copies = (kv_held - kv) * d * 2 * h * l;
        let tables = if c.tie_word_embeddings && pp == 1 { 1 } else { 2 };
        let padding = tables * (t * vocab.div_ceil(t) - vocab) * h;
        let tied_copy = if c.tie_word_embeddings && pp > 1 { vocab * h } else { 0 };
        let expect = parameter_count(&c) + norms + kv_copies + padding + tied_copy;
        prop_assert_eq!(total, 2 * expect, "tp {} pp {} tied {}", tp, pp, c.tie_word_embeddings);
        let kv_total: u64 = layers_per_stage(c.num_hidden_layers, pp)
            .iter()
            .map(|&layers| t * kv_bytes_per_token_per_gpu(&c, tp, layers))
            .sum();
        prop_assert_eq!(kv_total, 2 * l * kv_held * d * 2);
    }

    /// Around the boundary where a split stops fitting, your context and verdict are the
    /// planner's.
    #[test]
    fn fits_as_the_planner_decides(
        (c, tp) in shape_and_tp(), pp_pick in 0usize..12, context in 1usize..64,
        util_pick in 0usize..3, extra in 0.0f64..1.5,
    ) {
        let pp = 1 + pp_pick % c.num_hidden_layers;
        let mut w = Workload::for_model(&c);
        w.context_tokens = context;
        w.utilization = [0.5, 0.9, 1.0][util_pick];
        let reserve = engine_mm::activation_reserve_bytes(&c, tp, w.max_batched_tokens, w.max_seqs);
        let heaviest = *engine_mm::stage_weight_bytes_per_gpu(&c, tp, pp).iter().max().unwrap();
        let kv = layers_per_stage(c.num_hidden_layers, pp)
            .iter()
            .map(|&l| engine_mm::kv_bytes_per_token_per_gpu(&c, tp, l))
            .max()
            .unwrap();
        // Memory for the weights, the reserve and `extra` times one sequence's KV cache.
        let need = (heaviest + reserve) as f64 + extra * (context as u64 * kv) as f64;
        let mut hw = h200s(tp * pp, 1.0);
        hw.gpu_memory_bytes = (need / w.utilization) as u64;
        let cand = evaluate(&c, &hw, &w, tp, pp).expect("a split the model allows");
        let mem = hw.gpu_memory_bytes;
        prop_assert_eq!(
            kv_tokens_per_gpu(&c, tp, pp, mem, w.utilization, reserve),
            cand.max_kv_tokens
        );
        prop_assert_eq!(
            fits(&c, (tp, pp), mem, w.utilization, reserve, context),
            cand.problem.is_none(),
            "tp {} pp {} memory {} context {}: {:?}", tp, pp, mem, context, cand.problem
        );
    }
}

/// The chapter shows `lab plan`'s table for Llama-2-70B on 8 GPUs of 141 GB
/// (book/src/stage7/plan-llama-2-70b-8-h200-latency.txt): your weights, KV per token, KV
/// tokens and verdict give every row's figures.
#[test]
fn the_chapters_plan_table() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../book/src/stage7/plan-llama-2-70b-8-h200-latency.txt"
    );
    let text = std::fs::read_to_string(path).expect("the chapter's plan table");
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let mut rows = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().filter(|&c| c != "*").collect();
        let Some(split) = cols.first().and_then(|s| s.strip_prefix("TP=")) else {
            continue;
        };
        let (tp, pp) = split.split_once("×PP=").expect("TP=a×PP=b");
        let (tp, pp): (usize, usize) = (tp.parse().unwrap(), pp.parse().unwrap());
        let weights = *stage_weight_bytes_per_gpu(&c, tp, pp).iter().max().unwrap();
        assert_eq!(cols[2], format!("{:.1}", weights as f64 / 1e9), "{line}");
        let kv = (layers_per_stage(80, pp).iter())
            .map(|&l| kv_bytes_per_token_per_gpu(&c, tp, l))
            .max()
            .unwrap();
        assert_eq!(cols[3], format!("{:.1}", kv as f64 / 1e3), "{line}");
        let reserve = engine_mm::activation_reserve_bytes(&c, tp, w.max_batched_tokens, w.max_seqs);
        let memory = 141_000_000_000;
        let tokens = kv_tokens_per_gpu(&c, tp, pp, memory, w.utilization, reserve);
        assert_eq!(cols[5], tokens.to_string(), "{line}");
        let runs = fits(
            &c,
            (tp, pp),
            memory,
            w.utilization,
            reserve,
            w.context_tokens,
        );
        assert_eq!(runs, !line.contains("need"), "{line}");
        rows += 1;
    }
    assert_eq!(
        rows, 15,
        "every split of 8 GPUs that 64 heads and 8 KV heads allow"
    );
}
