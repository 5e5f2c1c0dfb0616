//! Batching, chunked prefill and preemption never change what a request generates: each
//! prompt's tokens are the same alone as in any batch. The tiny model makes this fast.

use engine::config::EngineConfig;
use engine::model_source::{load_model, ModelSpec};
use engine::{SamplingParams, LLM};

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "Über café — naïve 東京 🚀",
    "a",
    "Once upon a time, in a land far, far away, there lived a",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
];

fn llm(config: EngineConfig) -> LLM {
    LLM::new(load_model(&ModelSpec::Tiny, false, 0).unwrap(), config).unwrap()
}

fn generate(
    config: EngineConfig,
    prompts: &[&str],
    params: &SamplingParams,
) -> (Vec<Vec<u32>>, usize) {
    let mut llm = llm(config);
    let out = llm.generate(prompts, params).unwrap();
    assert_eq!(out.len(), prompts.len());
    (
        out.into_iter().map(|o| o.token_ids).collect(),
        llm.engine.stats.num_preemptions,
    )
}

fn alone(params: &SamplingParams) -> Vec<Vec<u32>> {
    PROMPTS
        .iter()
        .map(|p| generate(EngineConfig::default(), &[p], params).0.remove(0))
        .collect()
}

fn check(config: EngineConfig, params: &SamplingParams) -> usize {
    let (batched, preemptions) = generate(config, &PROMPTS, params);
    assert_eq!(
        batched,
        alone(params),
        "batched output differs from each prompt alone"
    );
    preemptions
}

fn greedy() -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(24)
    }
}

#[test]
fn batched_equals_alone() {
    check(EngineConfig::default(), &greedy());
}

fn seeded() -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        top_k: Some(50),
        top_p: 0.9,
        seed: Some(7),
        ..greedy()
    }
}

#[test]
fn seeded_sampling_is_batch_invariant() {
    check(EngineConfig::default(), &seeded());
}

/// A token's random number depends on (seed, position) only, so recomputing a preempted
/// request, or prefilling it in chunks, draws exactly the same numbers.
#[test]
fn seeded_sampling_survives_preemption_and_chunked_prefill() {
    let mut config = EngineConfig::default();
    config.cache.block_size = 4;
    config.cache.num_kv_blocks = Some(24);
    config.scheduler.max_num_batched_tokens = 5;
    let preemptions = check(config, &seeded());
    assert!(preemptions > 0, "no preemption happened");
}

/// Without a seed, a request gets a fresh one: the same prompt twice samples differently
/// (at temperature 1 over 24 tokens, two identical outputs are vanishingly unlikely).
#[test]
fn unseeded_requests_draw_different_tokens() {
    let params = SamplingParams {
        temperature: 1.0,
        ..greedy()
    };
    let (out, _) = generate(EngineConfig::default(), &[PROMPTS[0], PROMPTS[0]], &params);
    assert_ne!(out[0], out[1]);
}

#[test]
fn preemption_by_recompute_changes_nothing() {
    let mut config = EngineConfig::default();
    config.cache.block_size = 4;
    config.cache.num_kv_blocks = Some(24); // 96 slots for 8 requests of up to ~90 tokens each
    let preemptions = check(config, &greedy());
    assert!(
        preemptions > 0,
        "the cache was meant to be too small: no preemption happened"
    );
}

#[test]
fn chunked_prefill_changes_nothing() {
    let mut config = EngineConfig::default();
    config.scheduler.max_num_batched_tokens = 5; // every prompt longer than 5 bytes is chunked
    check(config, &greedy());
}

#[test]
fn every_step_respects_the_token_budget() {
    let mut config = EngineConfig::default();
    config.scheduler.max_num_batched_tokens = 7;
    config.scheduler.max_num_seqs = 3;
    let mut llm = llm(config);
    llm.generate(&PROMPTS, &greedy()).unwrap();
    assert!(llm.engine.stats.max_batched_tokens_in_a_step <= 7);
}

#[test]
fn a_rejected_prompt_leaves_nothing_behind() {
    let mut llm = llm(EngineConfig::default());
    let err = llm
        .generate(&["fine", ""], &greedy())
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt 2"), "{err}");
    assert!(
        !llm.engine.has_unfinished_requests(),
        "prompt 1 was withdrawn"
    );
    let free = llm.engine.scheduler.block_manager.num_free_blocks();
    assert_eq!(free, llm.engine.num_kv_blocks);
    // The engine is still usable and returns exactly the new request.
    assert_eq!(llm.generate(&["again"], &greedy()).unwrap().len(), 1);
}
