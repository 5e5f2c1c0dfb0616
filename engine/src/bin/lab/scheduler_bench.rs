//! `lab bench --workload scheduler`: the engine's host work per step on nano-vllm's workload,
//! without a model.
//!
//! A GPU step at batch 256 takes a few milliseconds of device time; whatever the host does
//! around it (scheduling, prefix cache bookkeeping, statistics, laying out the inputs) adds
//! to every step unless it hides behind the device. This benchmark runs exactly that host
//! work on nano-vllm's 256 requests (`nano_vllm::workload`, the lengths and ids of its
//! `bench.py`) over a cache of GPU size (`--num-kv-blocks`, default 250,000 blocks, what an
//! H200 gives Llama-3.2-1B), with sampled tokens drawn by a small generator instead of a
//! model, and times each part of [`engine::LLMEngine::step`] that runs on the host:
//!
//! - `schedule`: `Scheduler::schedule` (sorting, block allocation, prefix cache lookups and
//!   registration, building each sequence's batch entry with its block table);
//! - `stats`: what `step` does between scheduling and the forward pass (`take_swaps`, the
//!   prefix cache counters, `StepStats::of_step`);
//! - `prepare_inputs`: the model runner's layout of the batch (token ids, positions, slot
//!   mapping, block tables), which the GPU runner does before its copies;
//! - `update`: `Scheduler::update_from_output` (append the tokens, finish requests, free
//!   or park their blocks).
//!
//! Every request arrives at once and the loop steps until all are done, as the serving
//! benchmark does. Nothing here depends on the model but its vocabulary (10,001 ids are
//! enough for nano-vllm's prompts), so the figures are CPU time on this machine.

use std::time::Instant;

use engine::core::block_allocator::RefCountingAllocator;
use engine::core::block_manager::BlockManager;
use engine::core::scheduler::Scheduler;
use engine::core::scheduling_policy::Fcfs;
use engine::core::step_stats::StepStats;
use engine::sequence::{SeqId, Sequence};
use engine::worker::model_runner::prepare_inputs;
use engine::SamplingParams;

use crate::nano_vllm;

/// The cache a GPU gives: an H200 holds about 250,000 blocks of 16 tokens for Llama-3.2-1B.
pub const DEFAULT_NUM_KV_BLOCKS: usize = 250_000;
/// nano-vllm's ids are below 10,001; sampled ids are drawn from the same range.
const VOCAB: u32 = 10_001;

/// Nanoseconds spent in each part of the host's step, summed over steps.
#[derive(Default, Clone, Copy)]
struct Parts {
    schedule: u128,
    stats: u128,
    prepare: u128,
    update: u128,
}

impl Parts {
    fn total(&self) -> u128 {
        self.schedule + self.stats + self.prepare + self.update
    }
}

/// One run: every part summed over all steps, and over the steps that only decode.
struct RunResult {
    steps: usize,
    all: Parts,
    decode_steps: usize,
    decode: Parts,
    decode_seqs: usize,
}

/// Runs the workload `runs` times (after one warm-up) and prints the fastest run's µs per step.
pub fn run(
    model: &crate::ModelArgs,
    serving: &crate::serving_bench::ServingArgs,
    runs: usize,
    json: bool,
) -> anyhow::Result<()> {
    let config = model.engine_config();
    config.validate()?;
    let num_blocks = model.num_kv_blocks.unwrap_or(DEFAULT_NUM_KV_BLOCKS);
    let w = serving.workload()?;
    let caching = config.cache.enable_prefix_caching;
    eprintln!(
        "scheduler only: {} requests, {} KV blocks of {}, max {} seqs and {} tokens a step, \
         prefix caching {}",
        w.prompts.len(),
        num_blocks,
        config.cache.block_size,
        config.scheduler.max_num_seqs,
        config.scheduler.max_num_batched_tokens,
        if caching { "on" } else { "off" },
    );
    let one = || run_once(&config, num_blocks, &w);
    one()?; // warm-up: grow allocations, fault pages in
    let mut best: Option<RunResult> = None;
    for _ in 0..runs.max(1) {
        let r = one()?;
        if best.as_ref().is_none_or(|b| r.all.total() < b.all.total()) {
            best = Some(r);
        }
    }
    let r = best.expect("at least one run");
    let us = |ns: u128, steps: usize| ns as f64 / 1e3 / steps.max(1) as f64;
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "µs per step", "schedule", "stats", "prepare", "update", "total"
    );
    for (name, p, n) in [
        (format!("all {} steps", r.steps), r.all, r.steps),
        (
            format!("{} decode-only steps", r.decode_steps),
            r.decode,
            r.decode_steps,
        ),
    ] {
        println!(
            "{:<24} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            name,
            us(p.schedule, n),
            us(p.stats, n),
            us(p.prepare, n),
            us(p.update, n),
            us(p.total(), n)
        );
    }
    println!(
        "(decode-only steps average {:.0} sequences; best of {} runs; host CPU time, no model)",
        r.decode_seqs as f64 / r.decode_steps.max(1) as f64,
        runs.max(1)
    );
    if json {
        let parts = |p: Parts, n: usize| {
            serde_json::json!({
                "schedule_us": us(p.schedule, n),
                "stats_us": us(p.stats, n),
                "prepare_inputs_us": us(p.prepare, n),
                "update_us": us(p.update, n),
                "total_us": us(p.total(), n),
            })
        };
        let v = serde_json::json!({
            "workload": "scheduler",
            "num_kv_blocks": num_blocks,
            "prefix_caching": caching,
            "steps": r.steps,
            "per_step": parts(r.all, r.steps),
            "decode_steps": r.decode_steps,
            "per_decode_step": parts(r.decode, r.decode_steps),
        });
        println!("{v}");
    }
    Ok(())
}

/// One pass of the workload through a fresh scheduler, timing each part of every step.
fn run_once(
    config: &engine::EngineConfig,
    num_blocks: usize,
    w: &nano_vllm::Workload,
) -> anyhow::Result<RunResult> {
    let block_size = config.cache.block_size;
    let blocks = BlockManager::new(block_size, Box::new(RefCountingAllocator::new(num_blocks)))
        .with_prefix_caching(config.cache.enable_prefix_caching);
    let max_model_len = num_blocks * block_size;
    let mut s = Scheduler::new(
        config.scheduler,
        Box::new(Fcfs),
        blocks,
        vec![],
        max_model_len,
    )
    .with_preemption(config.preemption, 0);
    for (i, (p, &m)) in w.prompts.iter().zip(&w.max_tokens).enumerate() {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(m)
        };
        let ids = nano_vllm::fit_vocab(p, VOCAB as usize);
        s.add_sequence(Sequence::new(SeqId(i as u64), ids, params));
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_token = || {
        // xorshift64: any ids do, the workload ignores EOS.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % u64::from(VOCAB)) as u32
    };
    let mut r = RunResult {
        steps: 0,
        all: Parts::default(),
        decode_steps: 0,
        decode: Parts::default(),
        decode_seqs: 0,
    };
    let mut sampled = Vec::new();
    while s.has_unfinished() {
        let t0 = Instant::now();
        let out = s.schedule();
        let t1 = Instant::now();
        let swaps = s.take_swaps();
        let cache = s.block_manager.prefix_cache_stats();
        let stats = StepStats::of_step(r.steps + 1, &out, &swaps, &s);
        std::hint::black_box((&cache, &stats));
        let t2 = Instant::now();
        let input = prepare_inputs(&out, block_size);
        std::hint::black_box(&input);
        let t3 = Instant::now();
        sampled.clear();
        sampled.extend(
            out.scheduled
                .iter()
                .filter(|q| q.needs_logits)
                .map(|_| next_token()),
        );
        let t4 = Instant::now();
        let finished = s.update_from_output(&out, &sampled);
        let t5 = Instant::now();
        drop(finished);
        drop(input);
        anyhow::ensure!(
            !out.scheduled.is_empty(),
            "the scheduler made no progress with requests pending"
        );
        let step = Parts {
            schedule: (t1 - t0).as_nanos(),
            stats: (t2 - t1).as_nanos(),
            prepare: (t3 - t2).as_nanos(),
            update: (t5 - t4).as_nanos(),
        };
        let add = |into: &mut Parts| {
            into.schedule += step.schedule;
            into.stats += step.stats;
            into.prepare += step.prepare;
            into.update += step.update;
        };
        r.steps += 1;
        add(&mut r.all);
        if out.scheduled.iter().all(|q| q.token_ids.len() == 1) {
            r.decode_steps += 1;
            r.decode_seqs += out.scheduled.len();
            add(&mut r.decode);
        }
    }
    Ok(r)
}
