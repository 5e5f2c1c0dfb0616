//! Continuous batching on a simulated clock: the engine's own [`Scheduler`] builds every
//! step, a [`StepCost`] advances the clock, and a stand-in token is "sampled" for each
//! sequence that reached its last token.
//!
//! The loop is [`crate::LLMEngine::step`] with the model run replaced: schedule, take the
//! swaps, (cost the step), update from the output. Requests join the waiting queue when the
//! clock passes their arrival; when nothing is queued the clock jumps to the next arrival.
//! Since every request ignores EOS and stops at its output length, the scheduler's decisions
//! do not depend on which tokens are sampled, only on how many: they are the decisions the
//! engine makes on the same workload and config (tests/simulator.rs compares them).

use std::collections::HashMap;

use super::metrics::{RequestTimes, RunReport};
use super::step_cost::{StepCost, StepShape};
use super::workload::SimRequest;
use crate::config::EngineConfig;
use crate::core::block_allocator::RefCountingAllocator;
use crate::core::block_manager::BlockManager;
use crate::core::scheduler::Scheduler;
use crate::core::scheduling_policy::policy_from_name;
use crate::error::{EngineError, Result};
use crate::sampling_params::SamplingParams;
use crate::sequence::{SeqId, Sequence};

// ANCHOR: sim_config
/// The engine configuration a simulation schedules with: what `LLMEngine::new` would build
/// its scheduler from, with the cache size given rather than measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Block size, prefix caching, scheduler limits, preemption (device and parallel
    /// settings are not read).
    pub engine: EngineConfig,
    pub num_kv_blocks: usize,
    /// Host blocks for preemption by swap (0: every victim is recomputed).
    pub num_swap_blocks: usize,
    /// Longest sequence (prompt + output) the cache and model hold.
    pub max_model_len: usize,
    /// `--scheduling-policy` and its tenant weights.
    pub policy: String,
    pub tenant_weights: Vec<(String, f64)>,
}
// ANCHOR_END: sim_config

impl SimConfig {
    /// The scheduler `LLMEngine::new` builds from the same settings.
    pub fn scheduler(&self) -> Result<Scheduler> {
        self.engine.validate()?;
        if self.num_kv_blocks == 0 {
            return Err(EngineError::InvalidArgument(
                "--num-kv-blocks must be at least 1".into(),
            ));
        }
        let policy = policy_from_name(&self.policy, &self.tenant_weights)?;
        let block_manager = BlockManager::new(
            self.engine.cache.block_size,
            Box::new(RefCountingAllocator::new(self.num_kv_blocks)),
        )
        .with_prefix_caching(self.engine.cache.enable_prefix_caching);
        Ok(Scheduler::new(
            self.engine.scheduler,
            policy,
            block_manager,
            Vec::new(), // no EOS: requests stop at their output length
            self.max_model_len,
        )
        .with_preemption(self.engine.preemption, self.num_swap_blocks))
    }

    /// The same checks `LLMEngine::add_request` makes, for every request up front.
    pub fn check_requests(&self, requests: &[SimRequest]) -> Result<()> {
        let s = &self.engine.scheduler;
        for (i, r) in requests.iter().enumerate() {
            let n = r.prompt.len();
            if n == 0 || r.output_len == 0 {
                return Err(bad(format!(
                    "request {i}: empty prompt or zero output length"
                )));
            }
            if n + r.output_len > self.max_model_len {
                return Err(bad(format!(
                    "request {i}: {n} prompt + {} output tokens exceed the longest sequence, \
                     {} tokens (the model's positions, or {} KV blocks of {}); raise \
                     --num-kv-blocks or shorten the lengths",
                    r.output_len,
                    self.max_model_len,
                    self.num_kv_blocks,
                    self.engine.cache.block_size
                )));
            }
            if !s.enable_chunked_prefill && n > s.max_num_batched_tokens {
                return Err(bad(format!(
                    "request {i}: {n} prompt tokens exceed --max-num-batched-tokens without \
                     chunked prefill"
                )));
            }
        }
        Ok(())
    }
}

/// The sampling parameters every simulated (and validated) request runs with: greedy, EOS
/// ignored, exactly `output_len` tokens.
pub fn request_params(r: &SimRequest) -> SamplingParams {
    let mut p = SamplingParams::greedy(r.output_len);
    p.ignore_eos = true;
    p.tenant = r.tenant.clone();
    p
}

/// Every scheduled batch, as (sequence, first position, tokens) per entry: what the engine
/// decided, without the token values (which a simulation does not have).
pub type BatchTrace = Vec<Vec<(SeqId, usize, usize)>>;

// ANCHOR: simulate
/// Runs `requests` (sorted by arrival) under continuous batching. With `trace`, records every
/// scheduled batch.
pub fn simulate_continuous(
    config: &SimConfig,
    requests: &[SimRequest],
    cost: &dyn StepCost,
    mut trace: Option<&mut BatchTrace>,
) -> Result<RunReport> {
    let _span = tracing::info_span!("simulate_continuous", requests = requests.len()).entered();
    config.check_requests(requests)?;
    let mut scheduler = config.scheduler()?;
    let mut times: Vec<RequestTimes> = requests
        .iter()
        .map(|r| RequestTimes {
            arrival_s: r.arrival_s,
            ..Default::default()
        })
        .collect();
    let mut report = RunReport {
        scheme: "continuous".into(),
        requests: requests.len(),
        prompt_tokens: requests.iter().map(|r| r.prompt.len()).sum(),
        output_tokens: requests.iter().map(|r| r.output_len).sum(),
        ..Default::default()
    };
    // Sequence ids are request indices (the engine hands them out in arrival order too).
    let index = |id: SeqId| id.0 as usize;
    let mut finished_once: HashMap<SeqId, ()> = HashMap::new();
    let (mut clock, mut next) = (0.0f64, 0usize);
    loop {
        while next < requests.len() && requests[next].arrival_s <= clock {
            let r = &requests[next];
            let seq = Sequence::new(SeqId(next as u64), r.prompt.clone(), request_params(r));
            scheduler.add_sequence(seq);
            next += 1;
        }
        if !scheduler.has_unfinished() {
            if next == requests.len() {
                break;
            }
            clock = requests[next].arrival_s; // idle until the next arrival
            continue;
        }
        let out = scheduler.schedule();
        let swaps = scheduler.take_swaps();
        report.preemptions += out.preempted.len() + swaps.swapped_out.len();
        if out.is_empty() {
            if swaps.is_empty() {
                return Err(EngineError::Internal(
                    "the scheduler made no progress with requests pending".into(),
                ));
            }
            continue; // a step of swaps only (as the engine's): the next one runs them
        }
        let shape = StepShape::of(&out, &scheduler);
        clock += cost.step_seconds(&shape);
        report.busy_slots_per_step.push(shape.num_seqs);
        if let Some(trace) = trace.as_deref_mut() {
            trace.push(
                (out.scheduled.iter())
                    .map(|s| (s.seq_id, s.start_position, s.token_ids.len()))
                    .collect(),
            );
        }
        // A stand-in for the sampled token: any id works (EOS is ignored), but a varied one
        // keeps generated blocks from hashing alike in the prefix cache.
        let sampled: Vec<u32> = (out.scheduled.iter())
            .filter(|s| s.needs_logits)
            .map(|s| {
                let t = &mut times[index(s.seq_id)];
                t.first_token_s.get_or_insert(clock);
                (s.seq_id.0.wrapping_mul(7919) + s.start_position as u64) as u32 % 50_000
            })
            .collect();
        for seq in scheduler.update_from_output(&out, &sampled) {
            if finished_once.insert(seq.seq_id, ()).is_some() {
                return Err(EngineError::Internal(format!(
                    "request {} finished twice",
                    seq.seq_id.0
                )));
            }
            times[index(seq.seq_id)].finish_s = Some(clock);
        }
    }
    report.request_times = times;
    report.summarize(config.engine.scheduler.max_num_seqs);
    Ok(report)
}
// ANCHOR_END: simulate

fn bad(msg: String) -> EngineError {
    EngineError::InvalidRequest(msg)
}
