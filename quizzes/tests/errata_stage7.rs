//! Errata, Stage 7: hybrid parallelism (book/src/errata.md), the source's Q24 b.
//!
//! The source plans Llama-2-70B on 16 GPUs for throughput as TP=8 × PP=2, "each stage (16
//! layers)", 8.75 GB per GPU. The engine decides the layer count and the bytes (its memory
//! model on the model's config) and what its planner recommends for the same 16 GPUs.

use engine::config::ModelConfig;
use engine::distributed::comm_model::Interconnect;
use engine::distributed::memory_model::{layers_per_stage, stage_weight_bytes_per_gpu};
use engine::distributed::planner::{plan, Goal, Hardware, Workload};

/// Llama-2-70B's config as the planner reads it (engine/configs/llama-2-70b.json).
fn llama_2_70b() -> ModelConfig {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/configs/llama-2-70b.json"
    );
    ModelConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn errata_q24b_tp8_pp2_puts_40_layers_and_8_62_gb_on_each_gpu() {
    let c = llama_2_70b();
    assert_eq!(layers_per_stage(80, 2), vec![40, 40], "the source says 16");
    let stages = stage_weight_bytes_per_gpu(&c, 8, 2);
    // Stage 0: 40 layers' eighths and the embedding's eighth; stage 1 the LM head's and the
    // final norm.
    let layer = 106_971_136u64;
    assert_eq!(stages[0], 2 * (40 * layer + 4000 * 8192));
    assert_eq!(stages[1], stages[0] + 2 * 8192);
    let gb = |b: u64| (b as f64 / 1e9 * 100.0).round() / 100.0;
    assert_eq!(gb(stages[1]), 8.62, "the source says 8.75");
    // A TP group (one stage's 8 GPUs) holds half the model, not the source's 17.5 GB.
    let stage_group = 8 * stages[1];
    assert_eq!(gb(stage_group), 68.99);
}

/// The planner's pick for throughput on 16 GPUs: copies of a small TP group inside a node.
fn pick(gpu_memory_gb: f64, max_seqs: Option<usize>) -> (usize, usize, usize, f64, f64) {
    let c = llama_2_70b();
    let hw = Hardware::new(16, gpu_memory_gb, Interconnect::NvLink);
    let mut w = Workload::for_model(&c);
    w.max_seqs = max_seqs.unwrap_or(w.max_seqs);
    let p = plan(&c, &hw, &w, Goal::Throughput).unwrap();
    let r = &p.candidates[p.recommended];
    let tp8pp2 = p
        .candidates
        .iter()
        .find(|x| (x.tp, x.pp) == (8, 2))
        .unwrap();
    assert_eq!(tp8pp2.problem, None, "TP=8×PP=2 fits");
    (
        r.tp,
        r.pp,
        r.replicas,
        r.throughput_tokens_per_s,
        tp8pp2.throughput_tokens_per_s,
    )
}

#[test]
fn errata_q24b_the_planner_prefers_copies_inside_a_node_to_a_two_node_pipeline() {
    // 141 GB H200s at the engine's defaults (64 sequences per step): 8 copies of TP=2.
    let (tp, pp, copies, best, tp8pp2) = pick(141.0, None);
    assert_eq!((tp, pp, copies), (2, 1, 8));
    assert!(best > 10.0 * tp8pp2, "{best} against {tp8pp2} tokens/s");
    // 80 GB GPUs: 4 copies of TP=4.
    let (tp, pp, copies, best, tp8pp2) = pick(80.0, None);
    assert_eq!((tp, pp, copies), (4, 1, 4));
    assert!(best > tp8pp2);
    // Up to 512 sequences a step, where TP=8×PP=2's room counts: still 4 copies of TP=4.
    let (tp, pp, copies, best, tp8pp2) = pick(141.0, Some(512));
    assert_eq!((tp, pp, copies), (4, 1, 4));
    assert!(best > 3.0 * tp8pp2, "{best} against {tp8pp2} tokens/s");
}
