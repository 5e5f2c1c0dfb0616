//! Shared by the stage 2 tests: proptest settings, simulator configs and random workloads.
#![allow(dead_code)]

use engine::core::preemption::{PreemptionConfig, PreemptionMode};
use engine::simulator::simulate::SimConfig;
use engine::simulator::step_cost::LinearCost;
use engine::simulator::workload::{Arrival, LengthDist, SimRequest, WorkloadSpec};
use engine::EngineConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Proptest settings: `cases` random inputs drawn from a fixed seed, so a failure shows up on
/// every run, the same way (no regression files: a stub fails every time anyway).
pub fn proptest_config(cases: u32) -> Config {
    Config {
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x1ab_5eed),
        ..Config::with_cases(cases)
    }
}

/// One step costs one second: simulated time counts steps.
pub const ONE_PER_STEP: LinearCost = LinearCost {
    overhead_s: 1.0,
    per_token_s: 0.0,
    per_sampled_seq_s: 0.0,
    per_attention_pair_s: 0.0,
};

/// A cost in which every term counts (the size of a CPU fit of the tiny model), so that two
/// loops that build different steps, or time them differently, report different times.
pub const EVERY_TERM: LinearCost = LinearCost {
    overhead_s: 1e-3,
    per_token_s: 2e-5,
    per_sampled_seq_s: 3e-4,
    per_attention_pair_s: 1e-8,
};

/// Blocks of 4 tokens, FCFS, prefix caching off, recompute preemption.
pub fn config(max_num_seqs: usize, budget: usize, num_kv_blocks: usize) -> SimConfig {
    let mut engine = EngineConfig::default();
    engine.cache.block_size = 4;
    engine.cache.enable_prefix_caching = false;
    engine.scheduler.max_num_seqs = max_num_seqs;
    engine.scheduler.max_num_batched_tokens = budget;
    SimConfig {
        engine,
        num_kv_blocks,
        num_swap_blocks: 0,
        max_model_len: num_kv_blocks * 4,
        policy: "fcfs".into(),
        tenant_weights: vec![],
    }
}

/// Requests with 8-token prompts (distinct ids) and these output lengths and arrival times.
pub fn requests(outputs: &[usize], arrivals: &[f64]) -> Vec<SimRequest> {
    (outputs.iter().enumerate())
        .map(|(i, &n)| SimRequest {
            arrival_s: arrivals.get(i).copied().unwrap_or(0.0),
            prompt: (0..8).map(|t| (i * 8 + t) as u32 + 100).collect(),
            output_len: n,
            tenant: String::new(),
        })
        .collect()
}

/// A random small serving setup: a workload and a config that can run it (the cache holds
/// the longest request; sometimes barely, so preemption happens).
#[derive(Debug, Clone)]
pub struct Setup {
    pub config: SimConfig,
    pub requests: Vec<SimRequest>,
}

pub fn setup() -> impl Strategy<Value = Setup> {
    (
        (1usize..14, 0usize..3, 0u64..1000),
        (1usize..40, 1usize..16, 0usize..9),
        (1usize..6, 8usize..64, 0usize..24),
        (any::<bool>(), 0usize..3, any::<bool>()),
    )
        .prop_map(
            |((n, arrival, seed), (prompt_hi, output_hi, shared), (seqs, budget, spare), flags)| {
                let (chunked, preemption, prefix_caching) = flags;
                let arrival = match arrival {
                    0 => Arrival::AllAtOnce,
                    1 => Arrival::Poisson { rate: 200.0 },
                    _ => Arrival::Interval { interval: 0.004 },
                };
                // Without chunked prefill every prompt must fit one step's budget.
                let prompt_hi = if chunked {
                    prompt_hi
                } else {
                    prompt_hi.min(budget)
                };
                let spec = WorkloadSpec {
                    num_requests: n,
                    arrival,
                    prompt_len: LengthDist::Uniform(1, prompt_hi.max(1)),
                    output_len: LengthDist::Uniform(1, output_hi),
                    tenants: vec![],
                    shared_prefix: shared.min(prompt_hi),
                    vocab_size: 1000,
                    seed,
                };
                let requests = spec.generate().expect("a valid spec");
                let longest = (requests.iter())
                    .map(|r| r.prompt.len() + r.output_len)
                    .max()
                    .unwrap_or(1);
                let mut c = config(seqs, budget, longest.div_ceil(4) + spare);
                c.engine.scheduler.enable_chunked_prefill = chunked;
                c.engine.cache.enable_prefix_caching = prefix_caching;
                if preemption == 2 {
                    c.engine.preemption = PreemptionConfig {
                        mode: PreemptionMode::Swap,
                        swap_space_bytes: 1 << 20,
                        ..PreemptionConfig::default()
                    };
                    c.num_swap_blocks = 64;
                }
                Setup {
                    config: c,
                    requests,
                }
            },
        )
}
