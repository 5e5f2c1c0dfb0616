//! Shared by the stage 3 tests: run the tiny model (and SmolLM2, when fetched) on an engine
//! built from given parts, and compare with the engine's own parts.
#![allow(dead_code)]

use engine::config::{CacheConfig, EngineConfig, SchedulerConfig};
use engine::model_source::{load_model, ModelSpec};
use engine::{EngineParts, Prompt, RequestOutput, SamplingParams, LLM};
use proptest::test_runner::{Config, RngSeed};

/// The seed of every proptest in stage 3: each run draws the same inputs, so a failure
/// reproduces on every run (and on the maintainers' machine when you report it).
pub const PROPTEST_SEED: u64 = 0x5EED_0003;

/// Proptest settings: `cases` random inputs drawn from [`PROPTEST_SEED`], and no
/// `*.proptest-regressions` files written next to the tests when one fails (with a fixed seed
/// the failing case comes back by itself; a stub fails every time).
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(PROPTEST_SEED),
        ..Config::with_cases(cases)
    }
}

/// Small blocks and a small budget, so batches mix prefill chunks and decodes.
pub fn mixed_batch_config() -> EngineConfig {
    EngineConfig {
        cache: CacheConfig {
            block_size: 4,
            num_kv_blocks: Some(64),
            kv_cache_memory_bytes: 0,
            ..EngineConfig::default().cache
        },
        scheduler: SchedulerConfig {
            max_num_seqs: 8,
            max_num_batched_tokens: 24,
            enable_chunked_prefill: true,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    }
}

/// Six prompts of 3 to 37 byte tokens (ids 3..259 of the tiny model).
fn prompts() -> Vec<Prompt> {
    [3, 17, 37, 9, 23, 30]
        .iter()
        .enumerate()
        .map(|(p, &len)| {
            Prompt::TokenIds(
                (0..len)
                    .map(|i| 3 + ((p * 31 + i * 7) % 256) as u32)
                    .collect(),
            )
        })
        .collect()
}

pub fn greedy() -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(16)
    }
}

/// Seeded random sampling with every filter on.
pub fn random() -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_k: Some(20),
        top_p: 0.9,
        seed: Some(7),
        max_tokens: 16,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

/// The tokens of every prompt on the tiny model.
pub fn generate_tiny(parts: EngineParts, params: &SamplingParams) -> Vec<Vec<u32>> {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("the tiny model is built in code");
    let mut llm = LLM::with_parts(model, mixed_batch_config(), parts).expect("engine starts");
    let out = run_to_completion(&mut llm, prompts(), params);
    out.into_iter().map(|o| o.token_ids).collect()
}

/// Asserts that `parts` generate exactly the reference engine's tokens.
pub fn assert_same_as_engine(what: &str, parts: fn() -> EngineParts, params: &SamplingParams) {
    let yours = generate_tiny(parts(), params);
    let engine = generate_tiny(EngineParts::default(), params);
    assert_eq!(
        yours, engine,
        "with {what}, the engine generates other tokens"
    );
}

/// If SmolLM2 is fetched (`lab fetch-model smollm2`), checks that `parts` reproduce the first
/// tokens transformers generated for two reference prompts, batched; otherwise says it skipped.
pub fn check_smollm2(what: &str, parts: EngineParts) {
    let Some(dir) = integration_tests::smollm2_dir() else {
        eprintln!("skipping the SmolLM2 check: not fetched (run `lab fetch-model smollm2`)");
        return;
    };
    let reference = integration_tests::reference();
    let cases = [&reference.generations[0], &reference.generations[2]];
    let n = 8;
    let model = load_model(&ModelSpec::Dir(dir), false, 0).expect("SmolLM2 loads");
    let mut llm = LLM::with_parts(model, mixed_batch_config(), parts).expect("engine starts");
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    };
    let prompts = cases
        .iter()
        .map(|g| Prompt::TokenIds(g.prompt_token_ids.clone()))
        .collect();
    let out = run_to_completion(&mut llm, prompts, &params);
    for (o, g) in out.iter().zip(cases) {
        assert_eq!(
            o.token_ids,
            g.token_ids[..n],
            "with {what}, SmolLM2 does not generate transformers' tokens for prompt {}",
            g.id
        );
    }
}

/// `|a − b| <= tol · (1 + |b|)` elementwise, with a message naming the first difference.
pub fn assert_close(what: &str, yours: &[f32], engine: &[f32], tol: f32) {
    assert_eq!(yours.len(), engine.len(), "{what}: length");
    for (i, (a, b)) in yours.iter().zip(engine).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: element {i} is {a}, the engine's is {b}"
        );
    }
}

/// Runs `prompts` to completion on `llm`, step by step: a wrong part can make the engine stop
/// making progress (say, an allocator that loses blocks), and that should fail, not hang.
pub fn run_to_completion(
    llm: &mut LLM,
    prompts: Vec<Prompt>,
    params: &SamplingParams,
) -> Vec<RequestOutput> {
    for p in prompts {
        llm.engine
            .add_request(p, params.clone())
            .expect("valid request");
    }
    let mut out = Vec::new();
    let mut steps = 0;
    while llm.engine.has_unfinished_requests() {
        steps += 1;
        assert!(
            steps <= 5_000,
            "the engine made no progress in 5000 steps: a part schedules nothing or loses blocks"
        );
        out.extend(llm.engine.step().expect("the step runs"));
    }
    out.sort_by_key(|o| o.request_id);
    out
}
