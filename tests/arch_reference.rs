//! The architecture variants SmolLM2 does not exercise — Llama-3 rope scaling with an untied LM
//! head, Qwen2's q/k/v biases with a single KV head, Mistral with head_dim ≠ hidden/heads —
//! each a tiny random model saved by transformers (`scripts/make_arch_reference.py`), against
//! transformers' greedy tokens and first-step logits.

use std::path::PathBuf;

use engine::config::EngineConfig;
use engine::model_source::{load_model, ModelSpec};
use engine::{Prompt, SamplingParams, LLM};
use serde::Deserialize;

#[derive(Deserialize)]
struct Run {
    prompt_token_ids: Vec<u32>,
    token_ids: Vec<u32>,
    first_step_logits: Vec<f32>,
}

#[derive(Deserialize)]
struct Reference {
    runs: Vec<Run>,
}

fn check(name: &str) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/arch")).join(name);
    let r: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let model = load_model(&ModelSpec::Dir(dir), false, 0).unwrap();
    let mut llm = LLM::new(model, EngineConfig::default()).unwrap();
    let params = SamplingParams {
        ignore_eos: true,
        output_logits: true,
        ..SamplingParams::greedy(16)
    };
    let prompts = r
        .runs
        .iter()
        .map(|run| Prompt::TokenIds(run.prompt_token_ids.clone()));
    let outputs = llm.generate_prompts(prompts.collect(), &params).unwrap();
    for (i, (run, out)) in r.runs.iter().zip(&outputs).enumerate() {
        let max_diff = run
            .first_step_logits
            .iter()
            .zip(&out.logits[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            max_diff < 1e-4,
            "{name} prompt {i}: first-step logits differ by {max_diff}"
        );
        assert_eq!(
            out.token_ids, run.token_ids,
            "{name} prompt {i}: greedy tokens differ"
        );
    }
}

#[test]
fn llama3_rope_scaling_untied_head() {
    check("llama3-rope-scaling");
}

#[test]
fn qwen2_attention_bias() {
    check("qwen2-bias");
}

#[test]
fn mistral_explicit_head_dim() {
    check("mistral");
}
