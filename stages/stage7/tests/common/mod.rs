//! Shared by the stage 7 tests: the proptest settings and the model shapes.
#![allow(dead_code)]

use engine::config::ModelConfig;
use proptest::test_runner::{Config, RngSeed};

/// The seed of every proptest in stage 7: each run draws the same inputs, so a failure
/// reproduces on every run.
pub const PROPTEST_SEED: u64 = 0x5EED_0007;

/// Proptest settings: `cases` random inputs drawn from [`PROPTEST_SEED`], and no
/// `*.proptest-regressions` files written next to the tests.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        ..Config::with_cases(cases)
    }
}

/// A model shape of engine/configs (llama-2-70b, llama-3-8b, smollm2-135m, ...).
pub fn config(name: &str) -> ModelConfig {
    let path = format!(
        "{}/../../engine/configs/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    ModelConfig::from_json(&std::fs::read_to_string(&path).expect("engine/configs"))
        .expect("a valid config")
}

/// A Llama shape: `heads` query heads and `kv` KV heads of `head_dim`, hidden = heads ×
/// head_dim, MLP width `intermediate`, `layers` layers, `vocab` ids, tied or not.
pub fn shape(
    (heads, kv, head_dim): (usize, usize, usize),
    intermediate: usize,
    layers: usize,
    vocab: usize,
    tied: bool,
) -> ModelConfig {
    ModelConfig::from_json(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "hidden_size": {h}, "head_dim": {head_dim},
        "intermediate_size": {intermediate}, "num_hidden_layers": {layers},
        "num_attention_heads": {heads}, "num_key_value_heads": {kv}, "vocab_size": {vocab},
        "tie_word_embeddings": {tied}}}"#,
        h = heads * head_dim
    ))
    .expect("a valid shape")
}
