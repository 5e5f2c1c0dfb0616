//! Shared by the stage 6 tests: a fixed proptest seed, and one step of the engine's pipeline
//! on a small random-weight Llama, whose executed schedule the exercises are checked against.
#![allow(dead_code)]

use engine::config::ModelConfig;
use engine::distributed::ExecutedSchedule;
use engine::model_source::{LoadedModel, ModelWeights};
use engine::tiny_model::{tiny_config, tiny_tokenizer};
use engine::{EngineConfig, LLMEngine, Prompt, SamplingParams};
use proptest::test_runner::{Config, RngSeed};

/// The seed of every proptest in stage 6: each run draws the same inputs, so a failure
/// reproduces on every run.
pub const PROPTEST_SEED: u64 = 0x5EED_0006;

/// `cases` random inputs drawn from [`PROPTEST_SEED`], no regression files written.
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        ..Config::with_cases(cases)
    }
}

/// One step of `m` prompts (prefills) through `stages` pipeline stages, `m` micro-batches, of
/// a 4-layer random Llama on the CPU (one thread per stage): the schedule the engine ran.
pub fn engine_schedule(stages: usize, m: usize) -> ExecutedSchedule {
    let config = ModelConfig {
        num_hidden_layers: 4,
        ..tiny_config()
    };
    let model = LoadedModel {
        name: "stage6".into(),
        config,
        weights: ModelWeights::Random { seed: 6 },
        tokenizer: tiny_tokenizer(),
        eos_token_ids: vec![],
    };
    let mut c = EngineConfig::default();
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(64);
    c.parallel.pipeline_parallel_size = stages;
    c.parallel.pipeline_micro_batches = Some(m);
    let mut engine = LLMEngine::new(model, c).expect("engine");
    for p in 0..m {
        let prompt: Vec<u32> = (0..3 + p)
            .map(|i| ((p * 31 + i * 7) % 250) as u32)
            .collect();
        let params = SamplingParams::greedy(1);
        engine
            .add_request(Prompt::TokenIds(prompt), params)
            .expect("request");
    }
    engine.step().expect("one step");
    engine
        .pipeline_schedule()
        .expect("a pipeline records its schedule")
}
