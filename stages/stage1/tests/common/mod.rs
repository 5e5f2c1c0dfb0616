//! Shared by the stage 1 tests: proptest settings, policies other than FCFS, schedulers in a
//! chosen state, and runs of the tiny model (and SmolLM2, when fetched) on an engine built
//! from given parts, compared with the engine's own parts.
#![allow(dead_code)]

use std::cmp::Ordering;

use engine::config::{CacheConfig, EngineConfig, SchedulerConfig};
use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::{Fcfs, SchedulingPolicy};
use engine::llm_engine::EngineStats;
use engine::model_source::{load_model, ModelSpec};
use engine::sampling_params::SamplingParams;
use engine::sequence::{SeqId, Sequence, SequenceStatus};
use engine::{EngineParts, Prompt, RequestOutput, LLM};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Proptest settings: `cases` random inputs drawn from a fixed seed, so a failure shows up on
/// every run, the same way (no `*.proptest-regressions` files are written: a stub fails
/// every time anyway).
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x1ab_5eed),
        ..Config::with_cases(cases)
    }
}

/// Token id the fake model of the step-by-step tests treats as end of sequence.
pub const EOS: u32 = 2;

/// Shortest prompt first, then earlier arrival. A fixed order, like FCFS, so every request
/// still finishes; unlike FCFS, it is not the order in which requests enter the queues, so a
/// scheduler that forgets to sort shows it.
#[derive(Debug, Clone, Copy)]
pub struct ShortestPromptFirst;

impl SchedulingPolicy for ShortestPromptFirst {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        let key = |s: &Sequence| (s.prompt_token_ids.len(), s.seq_id);
        key(a).cmp(&key(b))
    }

    fn name(&self) -> &'static str {
        "shortest-prompt-first"
    }
}

/// Last come, first served: FCFS reversed.
#[derive(Debug, Clone, Copy)]
pub struct LatestFirst;

impl SchedulingPolicy for LatestFirst {
    fn compare(&self, a: &Sequence, b: &Sequence) -> Ordering {
        b.seq_id.cmp(&a.seq_id)
    }

    fn name(&self) -> &'static str {
        "latest-first"
    }
}

/// The policies the random tests draw from.
#[derive(Debug, Clone, Copy)]
pub enum Policy {
    Fcfs,
    ShortestPromptFirst,
    LatestFirst,
}

impl Policy {
    pub fn boxed(self) -> Box<dyn SchedulingPolicy> {
        match self {
            Policy::Fcfs => Box::new(Fcfs),
            Policy::ShortestPromptFirst => Box::new(ShortestPromptFirst),
            Policy::LatestFirst => Box::new(LatestFirst),
        }
    }
}

pub fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Fcfs),
        Just(Policy::ShortestPromptFirst),
        Just(Policy::LatestFirst),
    ]
}

/// A scheduler with no requests over `num_blocks` blocks of `block_size` tokens.
pub fn empty_scheduler(
    block_size: usize,
    num_blocks: usize,
    config: SchedulerConfig,
    policy: Box<dyn SchedulingPolicy>,
) -> Scheduler {
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(num_blocks)));
    Scheduler::new(config, policy, blocks, vec![EOS], block_size * num_blocks)
}

/// A request of `prompt_len` tokens that has generated `output_len` tokens (all made up).
pub fn sequence(id: u64, prompt_len: usize, output_len: usize) -> Sequence {
    let mut s = Sequence::new(
        SeqId(id),
        (0..prompt_len)
            .map(|i| 3 + (i as u32 + id as u32) % 200)
            .collect(),
        SamplingParams::greedy(64),
    );
    s.output_token_ids = (0..output_len).map(|i| 100 + i as u32).collect();
    s
}

/// Adds a waiting request (at the back of the waiting queue).
pub fn add_waiting(s: &mut Scheduler, id: u64, prompt_len: usize, output_len: usize) {
    s.add_sequence(sequence(id, prompt_len, output_len));
}

/// Adds a request as if it had been running for a while: at the back of the running queue,
/// with the KV cache (and the blocks) of its first `computed` tokens.
pub fn add_running(
    s: &mut Scheduler,
    id: u64,
    prompt_len: usize,
    output_len: usize,
    computed: usize,
) {
    let id = SeqId(id);
    s.add_sequence(sequence(id.0, prompt_len, output_len));
    s.waiting.retain(|&w| w != id);
    s.running.push(id);
    assert!(
        s.block_manager.allocate_slots(id, computed),
        "test setup: the cache is too small for {id:?}"
    );
    let q = s.sequence_mut(id).unwrap();
    assert!(
        computed <= q.num_tokens(),
        "test setup: {id:?} computes more than it has"
    );
    q.num_computed_tokens = computed;
    q.status = SequenceStatus::Running;
}

/// A cache so small, and a budget so tight, that the engine chunks prompts and preempts.
pub fn tight_config() -> EngineConfig {
    EngineConfig {
        cache: CacheConfig {
            block_size: 4,
            num_kv_blocks: Some(24),
            kv_cache_memory_bytes: 0,
            // Stage 1's `schedule` is the one before prefix caching: the engine's own looks up
            // cached blocks at admission (core::prefix_cache), which would save it steps that
            // a correct stage 1 scheduler takes.
            enable_prefix_caching: false,
            ..EngineConfig::default().cache
        },
        scheduler: SchedulerConfig {
            max_num_seqs: 4,
            max_num_batched_tokens: 40,
            enable_chunked_prefill: true,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    }
}

/// Like [`tight_config`], without chunked prefill.
pub fn unchunked_config() -> EngineConfig {
    let mut c = tight_config();
    c.scheduler.enable_chunked_prefill = false;
    c
}

/// Six prompts of 5 to 40 byte tokens (ids 3..259 of the tiny model).
fn prompts() -> Vec<Prompt> {
    [5, 17, 40, 9, 23, 31]
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

/// Greedy tokens of every prompt on the tiny model, and the engine's counters.
pub fn generate_tiny(parts: EngineParts, config: EngineConfig) -> (Vec<Vec<u32>>, EngineStats) {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("the tiny model is built in code");
    let mut llm = LLM::with_parts(model, config, parts).expect("engine starts");
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(16)
    };
    let out = run_to_completion(&mut llm, prompts(), &params);
    (
        out.into_iter().map(|o| o.token_ids).collect(),
        llm.engine.stats.clone(),
    )
}

/// Asserts that `parts` generate exactly the reference engine's tokens, with the same steps
/// and preemptions; returns the number of preemptions.
pub fn assert_same_as_engine(
    what: &str,
    parts: fn() -> EngineParts,
    config: EngineConfig,
) -> usize {
    let (yours, your_stats) = generate_tiny(parts(), config);
    let (engine, engine_stats) = generate_tiny(EngineParts::default(), config);
    assert_eq!(
        yours, engine,
        "with {what}, the engine generates other tokens"
    );
    assert_eq!(
        your_stats, engine_stats,
        "with {what}, the engine took other steps (num_steps, preemptions, batched tokens)"
    );
    engine_stats.num_preemptions
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
    let mut llm = LLM::with_parts(model, tight_config(), parts).expect("engine starts");
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
