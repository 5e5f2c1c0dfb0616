//! The simulator (engine::simulator): its scheduler is the engine's, every request finishes
//! exactly once, static vs continuous batching gives the step counts worked out by hand, and
//! the calibration fit recovers known coefficients.

use engine::core::preemption::{PreemptionConfig, PreemptionMode, VictimSelection};
use engine::core::scheduling_policy::policy_from_name;
use engine::model_source::{load_model, ModelSpec};
use engine::simulator::calibrate::fit;
use engine::simulator::engine_run::{recording_parts, run_engine};
use engine::simulator::simulate::{simulate_continuous, SimConfig};
use engine::simulator::static_batching::simulate_static;
use engine::simulator::step_cost::{LinearCost, StepShape};
use engine::simulator::workload::{Arrival, LengthDist, SimRequest, WorkloadSpec};
use engine::{EngineConfig, LLMEngine};
use proptest::prelude::*;

/// One step costs one second: simulated time counts steps.
const ONE_PER_STEP: LinearCost = LinearCost {
    overhead_s: 1.0,
    per_token_s: 0.0,
    per_sampled_seq_s: 0.0,
    per_attention_pair_s: 0.0,
};

fn config(max_num_seqs: usize, budget: usize, num_kv_blocks: usize) -> SimConfig {
    let mut engine = EngineConfig::default();
    engine.cache.block_size = 4;
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

fn requests(outputs: &[usize]) -> Vec<SimRequest> {
    (outputs.iter().enumerate())
        .map(|(i, &n)| SimRequest {
            arrival_s: 0.0,
            prompt: (0..8).map(|t| (i * 8 + t) as u32).collect(),
            output_len: n,
            tenant: String::new(),
        })
        .collect()
}

/// The source's example (Day 16, Q4): a batch of 4 whose requests generate 10, 10, 15 and 20
/// tokens. Step k samples every request's k-th token (the prefill samples the first).
#[test]
fn static_batching_runs_the_source_example_by_hand() {
    let c = config(4, 4096, 1024);
    let r = simulate_static(&c, &requests(&[10, 10, 15, 20]), &ONE_PER_STEP).unwrap();
    let mut expected = vec![4; 10]; // steps 1-10: all four
    expected.extend([2; 5]); // steps 11-15: both 10-token requests are done (the source says 3)
    expected.extend([1; 5]); // steps 16-20: only the 20-token request
    assert_eq!(r.busy_slots_per_step, expected);
    assert_eq!(r.busy_slots_per_step[10], 2, "running at step 11");
    assert_eq!(r.total_s, 20.0);
    // 55 useful slot-steps of 80.
    assert!((r.utilization - 55.0 / 80.0).abs() < 1e-12);
}

/// The same batch with two more requests (5 tokens each) waiting: continuous batching admits
/// them at step 11, the moment the two 10-token requests leave; static batching runs them
/// as a second batch after step 20.
#[test]
fn continuous_batching_refills_the_slots_freed_at_step_11() {
    let c = config(4, 4096, 1024);
    let w = requests(&[10, 10, 15, 20, 5, 5]);
    let cont = simulate_continuous(&c, &w, &ONE_PER_STEP, None).unwrap();
    let mut expected = vec![4; 15]; // steps 11-15: two decodes and the two newcomers
    expected.extend([1; 5]);
    assert_eq!(cont.busy_slots_per_step, expected);
    assert_eq!(cont.total_s, 20.0);
    let stat = simulate_static(&c, &w, &ONE_PER_STEP).unwrap();
    assert_eq!(stat.total_s, 25.0); // 20 steps, then 5 for the second batch
    assert_eq!(stat.busy_slots_per_step[20..], [2; 5]);
    // The newcomers' first tokens: step 11 (continuous) vs step 21 (static).
    assert_eq!(cont.request_times[4].first_token_s, Some(11.0));
    assert_eq!(stat.request_times[4].first_token_s, Some(21.0));
}

fn tiny_engine(c: &SimConfig, mode: PreemptionMode, swap_blocks: usize) -> LLMEngine {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    let block_bytes = engine::worker::cache_engine::kv_cache_bytes_per_block(&model.config, 4, 4);
    let mut config = c.engine;
    config.device = engine::config::Device::Cpu;
    config.cache.num_kv_blocks = Some(c.num_kv_blocks);
    config.preemption = PreemptionConfig {
        mode,
        victim: VictimSelection::Policy,
        swap_space_bytes: swap_blocks * block_bytes,
    };
    let policy = policy_from_name(&c.policy, &c.tenant_weights).unwrap();
    LLMEngine::with_parts(model, config, recording_parts(policy)).expect("engine starts")
}

/// The simulator's batches are the engine's: same workload, same config, the tiny model.
/// Small budgets and caches make the scheduler chunk, preempt (by recompute and by swap)
/// and hit the prefix cache; every policy.
#[test]
fn simulator_schedules_the_same_batches_as_the_engine() {
    let cases = [
        ("fcfs", PreemptionMode::Recompute, 0, true),
        ("priority", PreemptionMode::Recompute, 0, false),
        ("fair", PreemptionMode::Swap, 64, true),
        ("qos", PreemptionMode::Swap, 8, true),
    ];
    for (policy, mode, swap_blocks, prefix_caching) in cases {
        let spec = WorkloadSpec {
            num_requests: 12,
            arrival: Arrival::AllAtOnce,
            prompt_len: LengthDist::Uniform(3, 30),
            output_len: LengthDist::Uniform(1, 12),
            tenants: vec![("a".into(), 1.0), ("b".into(), 2.0)],
            shared_prefix: 9,
            vocab_size: 256,
            seed: 7,
        };
        let w = spec.generate().unwrap();
        let mut c = config(4, 16, 14);
        c.policy = policy.into();
        c.engine.cache.enable_prefix_caching = prefix_caching;
        let mut engine = tiny_engine(&c, mode, swap_blocks);
        c.engine = engine.config;
        c.max_model_len = engine.max_model_len;
        c.num_swap_blocks = engine.scheduler.swap_space.num_free_blocks();
        let real = run_engine(&mut engine, &w).unwrap();
        let mut trace = Vec::new();
        let sim = simulate_continuous(&c, &w, &ONE_PER_STEP, Some(&mut trace)).unwrap();
        assert_eq!(trace, real.batches(), "{policy} {mode:?}");
        assert!(
            sim.preemptions > 0 || policy == "priority",
            "{policy}: the cache is small enough to preempt"
        );
        assert!(real
            .report
            .request_times
            .iter()
            .all(|t| t.finish_s.is_some()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every request finishes exactly once (the simulator errs on a second finish), after
    /// its first token, which comes after its arrival; with any arrival process and cache.
    #[test]
    fn every_request_finishes_exactly_once(
        n in 1usize..40,
        seed in 0u64..1000,
        max_seqs in 1usize..8,
        budget in 1usize..64,
        blocks in 12usize..40,
        poisson in any::<bool>(),
        prefix_caching in any::<bool>(),
    ) {
        let spec = WorkloadSpec {
            num_requests: n,
            arrival: if poisson { Arrival::Poisson { rate: 3.0 } } else { Arrival::AllAtOnce },
            prompt_len: LengthDist::Uniform(1, 20),
            output_len: LengthDist::Uniform(1, 20),
            tenants: vec![],
            shared_prefix: 4,
            vocab_size: 100,
            seed,
        };
        let w = spec.generate().unwrap();
        let mut c = config(max_seqs, budget, blocks);
        c.engine.cache.enable_prefix_caching = prefix_caching;
        let cost = LinearCost { overhead_s: 0.01, per_token_s: 0.001, per_sampled_seq_s: 0.0, per_attention_pair_s: 0.0 };
        for r in [
            simulate_continuous(&c, &w, &cost, None).unwrap(),
            simulate_static(&c, &w, &cost).unwrap(),
        ] {
            prop_assert_eq!(r.request_times.len(), n);
            for t in &r.request_times {
                let (first, end) = (t.first_token_s.unwrap(), t.finish_s.unwrap());
                prop_assert!(t.arrival_s < first && first <= end, "{:?}", t);
            }
            prop_assert!(r.utilization > 0.0 && r.utilization <= 1.0);
        }
    }
}

/// The fit recovers coefficients that generated the times exactly.
#[test]
fn fit_recovers_known_coefficients() {
    let truth = LinearCost {
        overhead_s: 2e-3,
        per_token_s: 1e-4,
        per_sampled_seq_s: 5e-4,
        per_attention_pair_s: 3e-8,
    };
    use engine::simulator::step_cost::StepCost;
    let mut samples = Vec::new();
    for (tokens, sampled, pairs) in [
        (1, 1, 10),
        (16, 1, 136),
        (4, 4, 400),
        (64, 2, 5000),
        (8, 8, 9000),
        (200, 1, 20100),
    ] {
        let shape = StepShape {
            num_tokens: tokens,
            num_sampled: sampled,
            attention_pairs: pairs,
            num_seqs: sampled,
            ..Default::default()
        };
        samples.push((shape, truth.step_seconds(&shape)));
    }
    let got = fit(&samples).unwrap();
    for (g, t) in got.coefficients().iter().zip(truth.coefficients()) {
        assert!((g - t).abs() <= 1e-6 * t, "{got:?} vs {truth:?}");
    }
    // Too few shapes to tell the coefficients apart: an error, not a guess.
    assert!(fit(&samples[..2]).is_err());
}

#[test]
fn bad_workload_specs_are_refused() {
    assert!(Arrival::parse("poisson:0").is_err());
    assert!(Arrival::parse("sometimes").is_err());
    assert!(LengthDist::parse("--prompt-len", "uniform:9-3").is_err());
    assert!(LengthDist::parse("--prompt-len", "fixed:0").is_err());
    assert_eq!(
        LengthDist::parse("--x", "uniform:3-9").unwrap(),
        LengthDist::Uniform(3, 9)
    );
    // A request longer than the cache holds is refused before anything runs.
    let c = config(4, 64, 2); // 8 tokens
    assert!(simulate_continuous(&c, &requests(&[5]), &ONE_PER_STEP, None).is_err());
    assert!(simulate_static(&c, &requests(&[5]), &ONE_PER_STEP).is_err());
}

/// The sweeps run the simulator with one setting changed: each point is the run of that
/// config; the budget's first chunk decides time to first token; the charts are SVG.
#[test]
fn sweeps_are_runs_with_one_setting_changed() {
    use engine::simulator::sweep::{budget_sweep, run_sweeps, time_per_output_token};
    let c = config(4, 64, 64);
    let spec = WorkloadSpec {
        num_requests: 12,
        arrival: Arrival::Poisson { rate: 0.5 },
        prompt_len: LengthDist::Uniform(4, 40),
        output_len: LengthDist::Uniform(2, 12),
        tenants: vec![],
        shared_prefix: 0,
        vocab_size: 100,
        seed: 3,
    };
    let w = spec.generate().unwrap();
    let points = budget_sweep(&c, &w, &ONE_PER_STEP, &[8, 64]).unwrap();
    for p in &points {
        let mut one = c.clone();
        one.engine.scheduler.max_num_batched_tokens = p.max_num_batched_tokens;
        let r = simulate_continuous(&one, &w, &ONE_PER_STEP, None).unwrap();
        assert_eq!(
            (p.steps, p.ttft_s, p.latency_s),
            (r.steps, r.ttft_s, r.latency_s)
        );
        assert_eq!(p.tpot_s, time_per_output_token(&r, &w));
    }
    // A budget of 8 cuts prompts of up to 40 tokens into chunks: first tokens come later.
    assert!(points[0].ttft_s.mean > points[1].ttft_s.mean);
    // One step per second, so a request alone decodes one token per second.
    let alone = simulate_continuous(&c, &w[..1], &ONE_PER_STEP, None).unwrap();
    assert!((time_per_output_token(&alone, &w[..1]).mean - 1.0).abs() < 1e-9);

    let sweeps = run_sweeps(&c, &spec, &ONE_PER_STEP, &[8, 64], &[1, 4], &[0.25, 0.5]).unwrap();
    assert_eq!(sweeps.offline_continuous.request_times[11].arrival_s, 0.0);
    assert_eq!(
        sweeps.loads[1].continuous.mean_latency_s,
        sweeps.continuous.latency_s.mean
    );
    let charts = sweeps.charts();
    assert_eq!(charts.len(), 5);
    for (file, chart) in charts {
        let svg = chart.to_svg();
        assert!(file.ends_with(".svg") && svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
