//! Async scheduling (`--async-scheduling`, vLLM's): each step is scheduled and submitted while
//! the one before it is still in flight, its decodes fed by placeholders that take the token
//! the previous step samples. The engine must produce exactly what it produces without it.
//!
//! On the tiny model (the CPU, whose kernels are batch invariant, so a request's tokens do not
//! depend on its batch-mates): a mix of greedy and seeded random sampling, top-k and top-p,
//! `min_tokens` with stop ids, requests that stop on their EOS, logits asked for, prompts
//! chunked and sharing cached prefixes. Tokens, logits and finish reasons are those of the
//! synchronous engine; a request that stops costs exactly one step more; an abort while a step
//! is in flight loses nothing else; the engine is idle with nothing in flight once every
//! request is out. Random workloads with preemption (both modes) run in `preemption.rs`.
//! The same on a GPU (skipped without one): greedy and seeded sampling, graphs and eager.

use engine::config::Device;
use engine::model_source::{load_model, ModelSpec};
use engine::sequence::FinishReason;
use engine::{EngineConfig, LLMEngine, Prompt, RequestOutput, SamplingParams};

mod common;
use common::gpu::{gpu_or_skip, random_model, small_config};

fn config(async_scheduling: bool) -> EngineConfig {
    let mut c = EngineConfig {
        device: Device::Cpu,
        async_scheduling: Some(async_scheduling),
        ..EngineConfig::default()
    };
    c.cache.block_size = 4;
    c.cache.num_kv_blocks = Some(96);
    c.scheduler.max_num_batched_tokens = 24; // prompts are chunked
    c.scheduler.max_num_seqs = 6;
    c.scheduler.enable_chunked_prefill = true;
    c
}

fn engine(config: EngineConfig) -> LLMEngine {
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    LLMEngine::new(model, config).expect("engine starts")
}

/// Eight requests: prompts of 3 to 40 tokens, the first six sharing their first 8 tokens.
fn requests() -> Vec<(Prompt, SamplingParams)> {
    (0..8usize)
        .map(|i| {
            let len = [3, 17, 40, 9, 23, 31, 12, 5][i];
            let ids = (0..len)
                .map(|j| match (i < 6, j < 8) {
                    (true, true) => 3 + j as u32,
                    _ => 3 + ((i * 31 + j * 7) % 250) as u32,
                })
                .collect();
            let params = match i % 4 {
                0 => SamplingParams::greedy(12),
                1 => SamplingParams {
                    temperature: 0.9,
                    top_k: Some(20),
                    top_p: 0.9,
                    seed: Some(i as u64),
                    max_tokens: 14,
                    output_logits: true,
                    ..SamplingParams::default()
                },
                // Stops on its own EOS, wherever that falls: no ignore_eos.
                2 => SamplingParams {
                    temperature: 1.2,
                    seed: Some(100 + i as u64),
                    max_tokens: 30,
                    ..SamplingParams::default()
                },
                _ => SamplingParams {
                    temperature: 0.7,
                    seed: Some(7),
                    max_tokens: 16,
                    min_tokens: 6,
                    stop_token_ids: vec![40, 41, 42, 43, 44],
                    ..SamplingParams::default()
                },
            };
            (Prompt::TokenIds(ids), params)
        })
        .collect()
}

/// Runs every request to its end; returns the outputs in request order and the steps taken.
fn run(e: &mut LLMEngine, requests: Vec<(Prompt, SamplingParams)>) -> (Vec<RequestOutput>, usize) {
    let ids: Vec<_> = requests
        .into_iter()
        .map(|(p, params)| e.add_request(p, params).expect("valid request"))
        .collect();
    let steps = e.stats.num_steps;
    let mut outputs = Vec::new();
    while e.has_unfinished_requests() {
        for o in e.step().expect("step runs") {
            assert!(outputs
                .iter()
                .all(|x: &RequestOutput| x.request_id != o.request_id));
            outputs.push(o);
        }
    }
    outputs.sort_by_key(|o| o.request_id);
    assert_eq!(
        outputs.iter().map(|o| o.request_id).collect::<Vec<_>>(),
        ids
    );
    (outputs, e.stats.num_steps - steps)
}

fn assert_same(sync: &[RequestOutput], asynchronous: &[RequestOutput]) {
    for (s, a) in sync.iter().zip(asynchronous) {
        assert_eq!(s.token_ids, a.token_ids, "request {:?}", s.request_id);
        assert_eq!(
            s.finish_reason, a.finish_reason,
            "request {:?}",
            s.request_id
        );
        assert_eq!(s.logits, a.logits, "request {:?}", s.request_id);
        assert_eq!(s.text, a.text, "request {:?}", s.request_id);
    }
}

#[test]
fn async_scheduling_generates_what_the_synchronous_engine_does() {
    let (sync, _) = run(&mut engine(config(false)), requests());
    let mut e = engine(config(true));
    let (asynchronous, _) = run(&mut e, requests());
    assert_same(&sync, &asynchronous);
    // The mix really has both endings, and the cache really shared prefixes.
    let reasons: Vec<_> = sync.iter().map(|o| o.finish_reason).collect();
    assert!(reasons.contains(&FinishReason::Stop), "{reasons:?}");
    assert!(reasons.contains(&FinishReason::Length), "{reasons:?}");
    assert!(
        e.stats.prefix_cache.hit_tokens > 0,
        "{:?}",
        e.stats.prefix_cache
    );
    // Idle with nothing in flight: every block is back, and the engine runs the same
    // requests again to the same tokens.
    let bm = &e.scheduler.block_manager;
    assert_eq!(bm.num_free_blocks(), bm.num_total_blocks());
    let (again, _) = run(&mut e, requests());
    assert_same(&sync, &again);
}

/// One greedy request of n tokens: the synchronous engine takes n steps (the prefill samples
/// the first); async scheduling one more, the decode scheduled before the last token was
/// known, whose token is dropped.
#[test]
fn a_request_that_stops_costs_one_step_more() {
    for n in [1, 2, 7] {
        let one = || vec![(Prompt::TokenIds(vec![5, 6, 7]), SamplingParams::greedy(n))];
        let (sync, sync_steps) = run(&mut engine(config(false)), one());
        let (asynchronous, async_steps) = run(&mut engine(config(true)), one());
        assert_same(&sync, &asynchronous);
        assert_eq!(asynchronous[0].token_ids.len(), n);
        assert_eq!((sync_steps, async_steps), (n, n + 1), "max_tokens {n}");
    }
}

/// A request aborted while steps that schedule it are in flight leaves the others' tokens as
/// they are alone, and every block returns.
#[test]
fn an_abort_while_a_step_is_in_flight_loses_nothing_else() {
    let mut e = engine(config(true));
    let all = requests();
    let ids: Vec<_> = all
        .iter()
        .cloned()
        .map(|(p, params)| e.add_request(p, params).expect("valid request"))
        .collect();
    let mut outputs = Vec::new();
    for _ in 0..4 {
        outputs.extend(e.step().expect("step runs"));
    }
    assert!(e.abort_request(ids[2]), "request 2 was still running");
    while e.has_unfinished_requests() {
        outputs.extend(e.step().expect("step runs"));
    }
    outputs.sort_by_key(|o| o.request_id);
    let got: Vec<_> = outputs.iter().map(|o| o.request_id).collect();
    let want: Vec<_> = ids.iter().copied().filter(|&id| id != ids[2]).collect();
    assert_eq!(got, want);
    let bm = &e.scheduler.block_manager;
    assert_eq!(bm.num_free_blocks(), bm.num_total_blocks(), "blocks leaked");
    for (o, (p, params)) in outputs
        .iter()
        .zip(all.into_iter().enumerate().filter(|(i, _)| *i != 2))
        .map(|(o, (_, r))| (o, r))
    {
        let (alone, _) = run(&mut engine(config(false)), vec![(p, params)]);
        assert_eq!(
            o.token_ids, alone[0].token_ids,
            "request {:?}",
            o.request_id
        );
    }
}

#[test]
fn async_scheduling_with_several_ranks_is_refused_up_front() {
    let mut c = config(true);
    c.parallel.tensor_parallel_size = 2;
    let model = load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    let err = LLMEngine::new(model, c).err().expect("refused").to_string();
    assert!(err.contains("--async-scheduling"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// The default (`None`, as vLLM's): on for one worker on a GPU, off on the CPU and with
/// several ranks, where it is not refused but left off; given, it is what the engine runs.
#[test]
fn async_scheduling_is_on_by_default_for_one_gpu_worker_only() {
    let default = EngineConfig::default();
    assert_eq!(default.async_scheduling, None);
    assert!(default.async_scheduling_on(Device::Cuda(0)));
    assert!(!default.async_scheduling_on(Device::Cpu));
    let mut tp2 = EngineConfig::default();
    tp2.parallel.tensor_parallel_size = 2;
    assert!(!tp2.async_scheduling_on(Device::Cuda(0)));
    let mut pp2 = EngineConfig::default();
    pp2.parallel.pipeline_parallel_size = 2;
    assert!(!pp2.async_scheduling_on(Device::Cuda(0)));
    let off = EngineConfig {
        async_scheduling: Some(false),
        ..EngineConfig::default()
    };
    assert!(!off.async_scheduling_on(Device::Cuda(0)));
    assert!(config(true).async_scheduling_on(Device::Cpu));

    // A running engine's config holds the choice: off on the CPU by default, also with ranks.
    let model = || load_model(&ModelSpec::Tiny, false, 0).expect("tiny model");
    let mut c = config(false);
    c.async_scheduling = None;
    let engine = LLMEngine::new(model(), c).expect("engine starts");
    assert_eq!(engine.config.async_scheduling, Some(false));
    c.parallel.tensor_parallel_size = 2;
    let engine = LLMEngine::new(model(), c).expect("TP 2 starts, synchronous");
    assert_eq!(engine.config.async_scheduling, Some(false));
}

/// On a GPU: the step behind takes its decodes' tokens on the device, from the sampled ids
/// of the step still running. Every step here has the same batch in both modes (the prompts
/// are prefilled together, every request runs the same number of tokens), so the same
/// kernels run on the same rows and the tokens are equal, not merely within bf16 noise.
#[test]
fn cuda_async_scheduling_generates_what_the_synchronous_engine_does() {
    if !gpu_or_skip() {
        return;
    }
    let c = small_config(64);
    let model = || random_model(&c);
    let prompts = || -> Vec<(Prompt, SamplingParams)> {
        [1usize, 5, 37, 130, 9]
            .iter()
            .enumerate()
            .map(|(p, &len)| {
                let ids = (0..len).map(|i| 3 + ((i * 31 + p * 17) % 256) as u32);
                let params = SamplingParams {
                    temperature: if p % 2 == 0 { 0.0 } else { 0.8 },
                    seed: Some(p as u64),
                    max_tokens: 40,
                    ignore_eos: true,
                    ..SamplingParams::default()
                };
                (Prompt::TokenIds(ids.collect()), params)
            })
            .collect()
    };
    for graphs in [true, false] {
        let config = |async_scheduling| {
            let mut e = EngineConfig {
                device: Device::Cuda(0),
                cuda_graphs: graphs,
                async_scheduling: Some(async_scheduling),
                ..EngineConfig::default()
            };
            e.cache.block_size = 16;
            e.cache.num_kv_blocks = Some(256);
            e.scheduler.max_num_batched_tokens = 256;
            e
        };
        let mut sync_engine = LLMEngine::new(model(), config(false)).expect("engine starts");
        let (sync, _) = run(&mut sync_engine, prompts());
        let mut async_engine = LLMEngine::new(model(), config(true)).expect("engine starts");
        let (asynchronous, steps) = run(&mut async_engine, prompts());
        assert_same(&sync, &asynchronous);
        assert_eq!(
            steps, 41,
            "graphs {graphs}: 40 tokens, then the dropped one"
        );
        eprintln!("graphs {graphs}: {} requests equal", sync.len());
    }
}
