use super::*;
use crate::distributed::comm_model::{fit_alpha_beta, Interconnect, NVLINK_H200_ALL_REDUCE};
use proptest::prelude::*;

fn config(name: &str) -> ModelConfig {
    let path = format!("{}/configs/{name}.json", env!("CARGO_MANIFEST_DIR"));
    ModelConfig::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn h200s(gpus: usize) -> Hardware {
    Hardware::new(gpus, 141.0, Interconnect::NvLink)
}

fn find(p: &[Candidate], tp: usize, pp: usize) -> &Candidate {
    p.iter().find(|c| c.tp == tp && c.pp == pp).unwrap()
}

#[test]
fn q21_tp8_and_tp4_pp2_hold_the_same_weights_and_kv_per_gpu() {
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let all = candidates(&c, &h200s(8), &w);
    let (tp8, tp4pp2) = (find(&all, 8, 1), find(&all, 4, 2));
    // By hand: a TP=8 layer shard is 106,971,136 parameters; a TP=4 one 213,925,888.
    assert_eq!(
        tp8.weight_bytes_per_gpu,
        2 * (80 * 106_971_136 + 2 * 4000 * 8192 + 8192)
    );
    assert_eq!(
        tp4pp2.weight_bytes_per_gpu,
        2 * (40 * 213_925_888 + 8000 * 8192 + 8192)
    );
    assert_eq!(tp4pp2.layers_per_stage, vec![40, 40]);
    // One KV head × 80 layers, or two KV heads × 40 layers: 40,960 bytes a token either way.
    assert_eq!(tp8.kv_bytes_per_token_per_gpu, 40_960);
    assert_eq!(tp4pp2.kv_bytes_per_token_per_gpu, 40_960);
    // TP=8 all-reduces 2 × 8192 × 2 bytes per token per layer, each GPU sending 7/4 of it.
    assert_eq!(tp8.all_reduce_bytes_per_token_per_layer, 32_768);
    assert_eq!(tp8.ring_bytes_per_token_per_layer, 32_768.0 * 14.0 / 8.0);
    assert_eq!(tp4pp2.p2p_bytes_per_token, 32_768);
}

#[test]
fn the_batch_1_step_is_weights_and_kv_over_hbm_plus_the_all_reduces() {
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let tp8 = evaluate(&c, &h200s(8), &w, 8, 1).unwrap();
    let [_, mid, big] = NVLINK_H200_ALL_REDUCE;
    let beta = (big.0 - mid.0) / (big.1 - mid.1);
    let alpha = mid.1 - mid.0 / beta;
    let read = (tp8.weight_bytes_per_gpu as f64 + 4096.0 * 40_960.0) / 4210e9;
    let talk = 160.0 * (alpha + 16_384.0 * 1.75 / beta);
    assert!((tp8.latency_s - (read + talk)).abs() < 1e-12);
    assert!((tp8.latency_comm_share - talk / (read + talk)).abs() < 1e-12);
    assert_eq!(fit_alpha_beta(mid, big), (alpha, beta));
}

#[test]
fn latency_on_8_h200s_picks_tp8_and_says_why() {
    let c = config("llama-2-70b");
    let p = plan(&c, &h200s(8), &Workload::for_model(&c), Goal::Latency).unwrap();
    let r = &p.candidates[p.recommended];
    assert_eq!((r.tp, r.pp), (8, 1));
    let text = p.reasons.join(" ");
    assert!(
        text.contains("TP=8 fits in one node's nvlink domain"),
        "{text}"
    );
    assert!(text.contains("TP=4×PP=2"), "{text}");
    // TP=1 (138 GB of weights) does not fit 126.9 GB.
    assert!(find(&p.candidates, 1, 1).problem.is_some());
}

#[test]
fn throughput_for_a_small_model_keeps_copies_side_by_side() {
    let c = config("llama-3-8b");
    let p = plan(&c, &h200s(8), &Workload::for_model(&c), Goal::Throughput).unwrap();
    let r = &p.candidates[p.recommended];
    assert_eq!((r.tp, r.pp, r.replicas), (1, 1, 8), "{:?}", p.reasons);
    assert!(p.reasons.join(" ").contains("8 copies side by side"));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let err = plan(&c, &h200s(0), &w, Goal::Latency).unwrap_err();
    assert!(err.to_string().contains("--gpus"));
    let small = Hardware::new(2, 24.0, Interconnect::Pcie);
    let err = plan(&c, &small, &w, Goal::Latency).unwrap_err().to_string();
    assert!(
        err.starts_with("the model does not fit: even TP=2×PP=1"),
        "{err}"
    );
    let nan = Hardware::new(2, f64::NAN, Interconnect::Pcie);
    assert!(plan(&c, &nan, &w, Goal::Latency).is_err());
    // Enough for the weights, not for one sequence of 4096 tokens' KV.
    let tight = Hardware::new(1, 19.4, Interconnect::Pcie);
    let err = plan(&config("llama-3-8b"), &tight, &w, Goal::Latency).unwrap_err();
    assert!(err.to_string().contains("less than one sequence"), "{err}");
}

fn shape(heads: usize, kv: usize, layers: usize, inter: usize) -> ModelConfig {
    ModelConfig::from_json(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "hidden_size": {h}, "head_dim": 64,
        "intermediate_size": {inter}, "num_hidden_layers": {layers},
        "num_attention_heads": {heads}, "num_key_value_heads": {kv}, "vocab_size": 32000}}"#,
        h = heads * 64
    ))
    .unwrap()
}

proptest! {
    #[test]
    fn every_split_the_model_allows_appears_once(
        kv in 1usize..9, group in 1usize..5, layers in 1usize..12, gpus in 1usize..17,
        inter_mult in 1usize..4,
    ) {
        let c = shape(kv * group, kv, layers, 48 * inter_mult);
        let hw = h200s(gpus);
        let all = candidates(&c, &hw, &Workload::for_model(&c));
        let heads = kv * group;
        let mut expected = vec![];
        for tp in 1..=gpus {
            let kv_ok = if kv >= tp { kv % tp == 0 } else { tp % kv == 0 };
            let ok = heads % tp == 0 && kv_ok && (48 * inter_mult) % tp == 0;
            for pp in 1..=layers.min(gpus / tp) {
                if ok { expected.push((tp, pp)); }
            }
        }
        let got: Vec<_> = all.iter().map(|c| (c.tp, c.pp)).collect();
        prop_assert_eq!(got, expected);
        for cand in &all {
            prop_assert_eq!(cand.replicas, gpus / (cand.tp * cand.pp));
            let m = cand.micro_batches;
            prop_assert!((cand.bubble_efficiency - m as f64 / (m + cand.pp - 1) as f64).abs() < 1e-12);
            prop_assert!(cand.latency_s > 0.0 && cand.latency_comm_share < 1.0);
            prop_assert_eq!(cand.latency_comm_share == 0.0, cand.tp == 1 && cand.pp == 1);
        }
    }
}

#[test]
fn a_tp_group_stays_inside_a_node_unless_nothing_else_runs() {
    let c = config("llama-2-70b");
    let w = Workload::for_model(&c);
    let p = plan(&c, &h200s(16), &w, Goal::Latency).unwrap();
    let tp16 = find(&p.candidates, 16, 1);
    assert!(tp16.tp_crosses_nodes && tp16.latency_s < p.candidates[p.recommended].latency_s);
    assert_eq!(p.candidates[p.recommended].tp, 8);
    assert!(p.reasons.join(" ").contains("over 2 nodes' network"));
    // Nodes of 2 GPUs too small for TP=2's 69 GB: only PP, or TP across nodes, would run.
    let mut hw = Hardware::new(4, 60.0, Interconnect::NvLink);
    hw.gpus_per_node = 1;
    let p = plan(&c, &hw, &w, Goal::Latency).unwrap();
    assert!(p.candidates[p.recommended].problem.is_none());
}

/// A candidate runs exactly when `memory_model::fits` says its split fits: the same weights,
/// reserve and context, whatever the memory.
#[test]
fn a_candidate_runs_exactly_when_the_memory_model_says_it_fits() {
    for name in ["llama-2-70b", "llama-3-8b", "smollm2-135m"] {
        let c = config(name);
        let w = Workload::for_model(&c);
        for gb in [1.0, 20.0, 24.0, 40.0, 80.0, 141.0] {
            let hw = Hardware::new(8, gb, Interconnect::NvLink);
            for cand in candidates(&c, &hw, &w) {
                let reserve = cand.activation_reserve_bytes;
                let (memory, utilization) = (hw.gpu_memory_bytes, w.utilization);
                let fits = mem::fits(
                    &c,
                    (cand.tp, cand.pp),
                    memory,
                    utilization,
                    reserve,
                    w.context_tokens,
                );
                assert_eq!(fits, cand.problem.is_none(), "{name} {gb} GB {cand:?}");
                let tokens =
                    mem::kv_tokens_per_gpu(&c, cand.tp, cand.pp, memory, utilization, reserve);
                assert_eq!(tokens, cand.max_kv_tokens);
            }
        }
    }
}
